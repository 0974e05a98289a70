"""The PyTorch side of `cargo xtask bench`: CPU training throughput of LeNet-300-100 and LeNet-5.

The same step `deepcomp bench` times: batch 128 of generated 1x28x28 inputs, cross-entropy, backward,
SGD with momentum 0.9 (lr 0.01), on the given number of threads; best of three timed runs after a
warm-up. Prints one JSON object: {"torch": version, "threads": n, "lenet300_ex_s": .., "lenet5_ex_s": ..}.

Usage: python3 torch_cpu_train.py [threads] [lenet300_steps] [lenet5_steps]
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet300(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    """Caffe's LeNet-5: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, ReLU, fc 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


def throughput(model, steps, batch=128):
    torch.manual_seed(7)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xs = [torch.rand(batch, 1, 28, 28) * 2 - 1 for _ in range(4)]
    ys = [torch.randint(0, 10, (batch,)) for _ in range(4)]

    def run(n):
        for i in range(n):
            opt.zero_grad()
            loss = F.cross_entropy(model(xs[i % 4]), ys[i % 4])
            loss.backward()
            opt.step()

    run(2)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        run(steps)
        best = min(best, time.perf_counter() - t)
    return steps * batch / best


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    s300 = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    s5 = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    out = {
        "torch": torch.__version__,
        "threads": threads,
        "lenet300_ex_s": throughput(LeNet300(), s300),
        "lenet5_ex_s": throughput(LeNet5(), s5),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
