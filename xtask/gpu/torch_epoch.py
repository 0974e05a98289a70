#!/usr/bin/env python3
"""The PyTorch side of `deepcomp train-epoch`: the same epoch, timed the same way.

Architectures mirror crates/models/src/arch/vgg.rs and resnet.rs exactly (layer for layer, same
initialization schemes); training mirrors crates/driver/src/epoch.rs: seeded random uint8 images of
shape 3x32x32 with random labels (or CIFAR-10 is not read here: timing only), normalized on the host
with CIFAR-10's mean/std, shuffled every epoch, batches of 128 (last one smaller, as drop_last=False),
copied to the GPU batch by batch, SGD (momentum 0.9, weight decay 5e-4), cross-entropy, the logits
copied to the host every batch for the accuracy count (deepcomp's loop does that too). Each epoch is
timed from its first batch to torch.cuda.synchronize() after the last step. fp32 weights and
activations; PyTorch's own defaults otherwise (cuDNN may use TF32 for convolutions unless --no-tf32).

Prints the figures as JSON (same fields as deepcomp's report) and writes them with --json.
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
VGG_PLAN = [32, 32, "M", 64, 64, "M", 128, 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M"]


class Vgg16Half(nn.Module):
    """vgg.rs: 13 conv3x3 (no bias) + BatchNorm2d + ReLU, five 2x2 max pools, spatial mean, then
    Linear 256-256, BN1d, ReLU, Linear 256-256, BN1d, ReLU, Linear 256-classes; Glorot normal init."""

    def __init__(self, num_classes=10):
        super().__init__()
        layers, c = [], 3
        for v in VGG_PLAN:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(c, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
            nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
            nn.Linear(256, num_classes),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight)

    def forward(self, x):
        x = self.features(x)
        x = x.mean(3).mean(2)
        return self.classifier(x)


class BasicBlock(nn.Module):
    """resnet.rs / akamaster: conv-BN-ReLU-conv-BN + option-A shortcut, ReLU."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or in_planes != planes) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad is None:
            short = x
        else:
            short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)
        return F.relu(out + short)


class ResNet20(nn.Module):
    """resnet.rs: conv1 16 + bn1 + ReLU, 3 stages x 3 blocks (16, 32, 64 ch), global mean, linear;
    kaiming normal init of conv and linear weights."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, c = [], 16
        for planes, stride in [(16, 1), (32, 2), (64, 2)]:
            stage = []
            for b in range(3):
                stage.append(BasicBlock(c, planes, stride if b == 0 else 1))
                c = planes
            blocks.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = blocks
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = out.mean((2, 3))
        return self.linear(out)


ARCHS = {"vgg16_half": Vgg16Half, "resnet20": ResNet20}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="resnet20")
    ap.add_argument("--examples", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data-on-gpu", action="store_true",
                    help="keep the normalized data set on the GPU (no per-batch host work or copy)")
    ap.add_argument("--no-tf32", action="store_true", help="forbid TF32 in cuDNN convolutions")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    if a.examples < 1 or a.batch < 1 or a.epochs < 1:
        sys.exit("--examples, --batch and --epochs must be at least 1")

    torch.manual_seed(a.seed)
    if a.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    dev = torch.device(a.device)

    g = torch.Generator().manual_seed(a.seed ^ 0xDA7A)
    images = torch.randint(0, 256, (a.examples, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (a.examples,), dtype=torch.int64, generator=g)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    if a.data_on_gpu:
        gpu_images = ((images.float() / 255.0 - mean) / std).to(dev)
        gpu_labels = labels.to(dev)

    model = ARCHS[a.arch]().to(dev)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    epochs = []
    shuffle = torch.Generator().manual_seed(a.seed)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    for epoch in range(a.epochs):
        start = time.perf_counter()
        order = torch.randperm(a.examples, generator=shuffle)
        loss_sum, correct, batches = 0.0, 0, 0
        for i in range(0, a.examples, a.batch):
            idx = order[i : i + a.batch]
            if a.data_on_gpu:
                gidx = idx.to(dev)
                x, y = gpu_images[gidx], gpu_labels[gidx]
                host_y = labels[idx]
            else:
                x = ((images[idx].float() / 255.0 - mean) / std).to(dev)
                host_y = labels[idx]
                y = host_y.to(dev)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            host_logits = logits.detach().float().cpu()
            loss_sum += loss.item() * len(idx)
            correct += int((host_logits.argmax(1) == host_y).sum())
            batches += 1
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
        e = {
            "epoch": epoch,
            "seconds": seconds,
            "ex_per_s": a.examples / seconds,
            "loss": loss_sum / a.examples,
            "top1": correct / a.examples,
            "batches": batches,
        }
        print(f"torch_epoch {a.arch} on {dev}: epoch {epoch}: {seconds:.3f} s, {e['ex_per_s']:.0f} ex/s, "
              f"loss {e['loss']:.4f}", file=sys.stderr)
        epochs.append(e)
    warm = 1 if len(epochs) > 1 else 0
    report = {
        "tool": "pytorch",
        "arch": a.arch,
        "device": str(dev),
        "data": "generated" + (" (on gpu)" if a.data_on_gpu else ""),
        "examples": a.examples,
        "batch": a.batch,
        "parameters": params,
        "epochs": epochs,
        "warm_epoch": warm,
        "warm_seconds": epochs[warm]["seconds"],
        "warm_ex_per_s": epochs[warm]["ex_per_s"],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    if not all(math.isfinite(e["loss"]) for e in epochs):
        sys.exit("non-finite loss")


if __name__ == "__main__":
    main()
