"""The PyTorch side of `cargo xtask bench`: CPU training / evaluation throughput on the steps that
`deepcomp bench` times.

The same steps: batches of 128 generated inputs (1x28x28 for the LeNets, 3x32x32 for the CIFAR nets),
cross-entropy, backward, SGD with momentum 0.9 (lr 0.01), on the given number of threads; best of three
timed runs after a warm-up. The CIFAR architectures are those of `xtask/gpu/torch_epoch.py` (which
mirror crates/models/src/arch/{resnet,vgg}.rs layer for layer). Also measured: ResNet-20 evaluation
(no_grad, eval mode, batch 128) and ResNet-20 masked fine-tuning at 80 % sparsity (per conv / linear
weight, the 80 % smallest magnitudes masked; the gradient, the weight and the momentum are multiplied
by the mask every step, as deepcomp's finetune hook does).

Prints one JSON object: {"torch": version, "threads": n, "lenet300_ex_s": .., "lenet5_ex_s": ..,
"resnet20_ex_s": .., "vgg16_half_ex_s": .., "eval_resnet20_ex_s": .., "finetune_resnet20_ex_s": ..}.

Usage: python3 torch_cpu_train.py [threads] [lenet300_steps] [lenet5_steps] [conv_steps] [eval_batches]
"""
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpu"))
from torch_epoch import ResNet20, Vgg16Half  # noqa: E402


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


def inputs(shape, batch=128):
    xs = [torch.rand(batch, *shape) * 2 - 1 for _ in range(4)]
    ys = [torch.randint(0, 10, (batch,)) for _ in range(4)]
    return xs, ys


def best_seconds(run, steps):
    run(2)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        run(steps)
        best = min(best, time.perf_counter() - t)
    return best


def throughput(model, steps, shape=(1, 28, 28), batch=128, sparsity=None):
    torch.manual_seed(7)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xs, ys = inputs(shape, batch)
    masks = []
    if sparsity is not None:
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight.data
                k = int(w.numel() * sparsity)
                thr = w.abs().flatten().kthvalue(k).values if k > 0 else -1.0
                mask = (w.abs() > thr).to(w.dtype)
                w.mul_(mask)
                masks.append((m.weight, mask))

    def run(n):
        for i in range(n):
            opt.zero_grad()
            loss = F.cross_entropy(model(xs[i % 4]), ys[i % 4])
            loss.backward()
            for p, mask in masks:
                p.grad.mul_(mask)
            opt.step()
            for p, mask in masks:
                p.data.mul_(mask)
                buf = opt.state[p].get("momentum_buffer")
                if buf is not None:
                    buf.mul_(mask)

    return steps * batch / best_seconds(run, steps)


def eval_throughput(model, batches, shape=(3, 32, 32), batch=128):
    torch.manual_seed(7)
    model.eval()
    xs, _ = inputs(shape, batch)

    def run(n):
        with torch.no_grad():
            for i in range(n):
                model(xs[i % 4]).argmax(1)

    return batches * batch / best_seconds(run, batches)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    s300 = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    s5 = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    sconv = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    seval = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cifar = (3, 32, 32)
    out = {
        "torch": torch.__version__,
        "threads": threads,
        "lenet300_ex_s": throughput(LeNet300(), s300),
        "lenet5_ex_s": throughput(LeNet5(), s5),
    }
    if sconv > 0:
        out["resnet20_ex_s"] = throughput(ResNet20(), sconv, cifar)
        out["vgg16_half_ex_s"] = throughput(Vgg16Half(), sconv, cifar)
        out["finetune_resnet20_ex_s"] = throughput(ResNet20(), sconv, cifar, sparsity=0.8)
    if seval > 0:
        out["eval_resnet20_ex_s"] = eval_throughput(ResNet20(), seval)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
