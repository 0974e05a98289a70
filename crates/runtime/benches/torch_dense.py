"""PyTorch dense eval latency of LeNet-300-100, LeNet-5 (Caffe) and ResNet-20 (option A), the
counterpart of `cargo run -p deepcomp-runtime --example bench`. Dense timing depends on the shapes
only, so the weights are PyTorch's default initialization. Prints JSON lines.

    python3 crates/runtime/benches/torch_dense.py
"""
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet300(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(self.conv2(F.max_pool2d(self.conv1(x), 2)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class Block(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or cin != planes) else None

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        short = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + short)


class ResNet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        blocks, c = [], 16
        for planes, stride in [(16, 1), (32, 2), (64, 2)]:
            for b in range(3):
                blocks.append(Block(c, planes, stride if b == 0 else 1))
                c = planes
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.linear(x.mean((2, 3)))


def median_seconds(model, x):
    with torch.inference_mode():
        model(x)
        t = time.perf_counter()
        model(x)
        first = time.perf_counter() - t
        reps = max(5, min(200, int(0.3 / max(first, 1e-7))))
        v = []
        for _ in range(reps):
            t = time.perf_counter()
            model(x)
            v.append(time.perf_counter() - t)
    v.sort()
    return v[len(v) // 2]


def main():
    torch.manual_seed(0)
    for name, model, shape in [
        ("lenet300", LeNet300(), (1, 28, 28)),
        ("lenet5", LeNet5(), (1, 28, 28)),
        ("resnet20", ResNet20(), (3, 32, 32)),
    ]:
        model.eval()
        weight_bytes = sum(p.numel() * 4 for p in model.parameters())
        for threads in (1, 2):
            torch.set_num_threads(threads)
            b1 = median_seconds(model, torch.randn(1, *shape))
            b128 = median_seconds(model, torch.randn(128, *shape))
            print(json.dumps({
                "model": name, "threads": threads, "torch": torch.__version__,
                "torch_b1_us": round(b1 * 1e6, 1), "torch_b128_ms": round(b128 * 1e3, 3),
                "torch_param_bytes": weight_bytes,
            }))


if __name__ == "__main__":
    main()
