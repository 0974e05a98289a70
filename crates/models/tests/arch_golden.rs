//! Golden tests: every architecture against PyTorch.
//!
//! Weights and inputs are not exchanged through files: both sides fill every `state_dict` tensor from a
//! closed formula (an integer hash, murmur3's fmix32, evaluated exactly on both sides, scaled in f64 and
//! rounded to f32), run the same input and compare logits (eval mode and, for the BatchNorm networks,
//! train mode), BatchNorm running statistics after one train-mode step, and gradient norms. The constants
//! below were printed by this script (torch 2.15 CPU; `python3 golden.py`). PyTorch evaluates in float64
//! on the f32-rounded weights, so the constants are the exact answer and the tolerance only has to
//! absorb this crate's f32 rounding:
//!
//! ```python
//! # Golden values for crates/models/tests/arch_golden.rs (torch 2.15, CPU).
//! # Weights and inputs come from closed formulas both sides evaluate in f64 and round to f32; the
//! # network then runs in float64, so the constants are exact up to f64 rounding for those f32 values.
//! import math
//! import numpy as np
//! import torch
//! import torch.nn as nn
//! import torch.nn.functional as F
//!
//! torch.set_num_threads(1)
//!
//! class LeNet300(nn.Module):
//!     def __init__(s, widths):
//!         super().__init__()
//!         for i in range(len(widths) - 1):
//!             setattr(s, f"fc{i+1}", nn.Linear(widths[i], widths[i + 1]))
//!         s.n = len(widths) - 1
//!     def forward(s, x):
//!         x = x.flatten(1)
//!         for i in range(s.n):
//!             x = getattr(s, f"fc{i+1}")(x)
//!             if i < s.n - 1:
//!                 x = F.relu(x)
//!         return x
//!
//! class LeNet5(nn.Module):  # Caffe variant
//!     def __init__(s, c=1, classes=10):
//!         super().__init__()
//!         s.conv1 = nn.Conv2d(c, 20, 5); s.conv2 = nn.Conv2d(20, 50, 5)
//!         s.fc1 = nn.Linear(800, 500); s.fc2 = nn.Linear(500, classes)
//!     def forward(s, x):
//!         x = F.max_pool2d(s.conv1(x), 2); x = F.max_pool2d(s.conv2(x), 2)
//!         return s.fc2(F.relu(s.fc1(x.flatten(1))))
//!
//! class Net(nn.Module):  # PyTorch CIFAR tutorial
//!     def __init__(s, c, k1, k2, feat, classes):
//!         super().__init__()
//!         s.conv1 = nn.Conv2d(c, 6, k1); s.pool = nn.MaxPool2d(2, 2); s.conv2 = nn.Conv2d(6, 16, k2)
//!         s.fc1 = nn.Linear(feat, 120); s.fc2 = nn.Linear(120, 84); s.fc3 = nn.Linear(84, classes)
//!     def forward(s, x):
//!         x = s.pool(F.relu(s.conv1(x))); x = s.pool(F.relu(s.conv2(x)))
//!         x = torch.flatten(x, 1)
//!         return s.fc3(F.relu(s.fc2(F.relu(s.fc1(x)))))
//!
//! class VGG16_half(nn.Module):
//!     def __init__(s, c=3, classes=10):
//!         super().__init__()
//!         layers, cin = [], c
//!         for v in [32, 32, 'M', 64, 64, 'M', 128, 128, 128, 'M', 256, 256, 256, 'M', 256, 256, 256, 'M']:
//!             if v == 'M':
//!                 layers.append(nn.MaxPool2d(2))
//!             else:
//!                 layers += [nn.Conv2d(cin, v, 3, 1, 1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
//!                 cin = v
//!         s.features = nn.Sequential(*layers)
//!         s.classifier = nn.Sequential(nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
//!                                      nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
//!                                      nn.Linear(256, classes))
//!     def forward(s, x):
//!         return s.classifier(s.features(x).mean(3).mean(2))
//!
//! class LambdaLayer(nn.Module):
//!     def __init__(s, f):
//!         super().__init__(); s.f = f
//!     def forward(s, x):
//!         return s.f(x)
//!
//! class BasicBlock(nn.Module):  # akamaster/pytorch_resnet_cifar10, option A
//!     def __init__(s, inp, planes, stride=1):
//!         super().__init__()
//!         s.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False); s.bn1 = nn.BatchNorm2d(planes)
//!         s.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False); s.bn2 = nn.BatchNorm2d(planes)
//!         s.shortcut = nn.Sequential()
//!         if stride != 1 or inp != planes:
//!             s.shortcut = LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0))
//!     def forward(s, x):
//!         out = F.relu(s.bn1(s.conv1(x)))
//!         out = s.bn2(s.conv2(out))
//!         return F.relu(out + s.shortcut(x))
//!
//! class ResNet20(nn.Module):
//!     def __init__(s, c=3, classes=10):
//!         super().__init__()
//!         s.in_planes = 16
//!         s.conv1 = nn.Conv2d(c, 16, 3, 1, 1, bias=False); s.bn1 = nn.BatchNorm2d(16)
//!         s.layer1 = s._make(16, 1); s.layer2 = s._make(32, 2); s.layer3 = s._make(64, 2)
//!         s.linear = nn.Linear(64, classes)
//!     def _make(s, planes, stride):
//!         layers = []
//!         for st in [stride, 1, 1]:
//!             layers.append(BasicBlock(s.in_planes, planes, st)); s.in_planes = planes
//!         return nn.Sequential(*layers)
//!     def forward(s, x):
//!         out = F.relu(s.bn1(s.conv1(x)))
//!         out = s.layer3(s.layer2(s.layer1(out)))
//!         out = F.avg_pool2d(out, out.size()[3]).view(out.size(0), -1)
//!         return s.linear(out)
//!
//! def f32(a):
//!     return torch.from_numpy(np.asarray(a, dtype=np.float64).astype(np.float32))
//!
//! M32 = np.uint64(0xFFFFFFFF)
//!
//! def unif(n, j):
//!     # murmur3 fmix32 of (i + 0x9E3779B9 * (j + 1)) mod 2^32, scaled to [0, 1): exact integer math.
//!     x = (np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B9) * np.uint64(j + 1)) & M32
//!     x ^= x >> np.uint64(16); x = (x * np.uint64(0x85EBCA6B)) & M32
//!     x ^= x >> np.uint64(13); x = (x * np.uint64(0xC2B2AE35)) & M32
//!     x ^= x >> np.uint64(16)
//!     return x.astype(np.float64) / 4294967296.0
//!
//! def fill(model):
//!     bn = {n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
//!     j = 0
//!     for name, t in model.state_dict().items():
//!         if name.endswith("num_batches_tracked"):
//!             continue
//!         mod, leaf = name.rsplit(".", 1)
//!         u = unif(t.numel(), j)
//!         if mod in bn:
//!             v = {"weight": 1 + 0.2 * (2 * u - 1), "bias": 0.1 * (2 * u - 1),
//!                  "running_mean": 0.1 * (2 * u - 1), "running_var": 1 + 0.5 * u}[leaf]
//!         elif leaf == "weight":
//!             v = (2 * u - 1) * math.sqrt(6.0 / t[0].numel())
//!         else:
//!             v = 0.1 * (2 * u - 1)
//!         with torch.no_grad():
//!             t.copy_(f32(v).reshape(t.shape))
//!         j += 1
//!
//! def inputs(shape):
//!     return f32(2 * unif(int(np.prod(shape)), 1000) - 1).reshape(shape)
//!
//! def emit(label, model, shape, bn):
//!     fill(model)  # f32 values, then evaluated in float64: the exact answer for these f32 weights
//!     model = model.double()
//!     x = inputs(shape).double()
//!     model.eval()
//!     with torch.no_grad():
//!         ev = model(x)
//!     print(f"// {label}")
//!     names = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
//!     print(f"const {label}_NAMES: [&str; {len(names)}] = [" + ", ".join(f'"{n}"' for n in names) + "];")
//!     print(f"const {label}_EVAL: [f32; {ev.numel()}] = {fmt(ev)};")
//!     model.train()
//!     tr = model(x)
//!     loss = (tr * f32(2 * unif(tr.numel(), 2000) - 1).double().reshape(tr.shape)).sum()
//!     loss.backward()
//!     ws = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() >= 2]
//!     grads = torch.stack([w.grad.norm() for w in ws])
//!     print(f"const {label}_WGRADS: [f32; {len(ws)}] = {fmt(grads)};")
//!     if not bn:
//!         return
//!     print(f"const {label}_TRAIN: [f32; {tr.numel()}] = {fmt(tr.detach())};")
//!     bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
//!     stats = [bns[0].running_mean.sum(), bns[0].running_var.sum(), bns[-1].running_mean.sum(), bns[-1].running_var.sum()]
//!     print(f"const {label}_STATS: [f32; 4] = {fmt(torch.stack(stats))};")
//!     print(f"const {label}_BNGRADS: [f32; 2] = {fmt(torch.stack([bns[0].weight.grad.norm(), bns[0].bias.grad.norm()]))};")
//!
//! def fmt(t):
//!     return "[" + ", ".join(f"{v:.8e}" for v in t.flatten().tolist()) + "]"
//!
//! emit("LENET300", LeNet300([784, 300, 100, 10]), (2, 1, 28, 28), False)
//! emit("LENET5", LeNet5(), (2, 1, 28, 28), False)
//! emit("MLP", LeNet300([784, 64, 32, 16, 10]), (2, 1, 28, 28), False)
//! emit("CIFAR_LENET_K89", Net(3, 8, 9, 64, 10), (2, 3, 32, 32), False)
//! emit("CIFAR_LENET_GRAY", Net(1, 5, 5, 400, 10), (2, 1, 32, 32), False)
//! emit("VGG16_HALF", VGG16_half(), (4, 3, 32, 32), True)
//! emit("RESNET20", ResNet20(), (3, 3, 32, 32), True)
//! ```

use candle_core::{Device, Tensor};
use deepcomp_models::{build, ArchConfig, Model, ParamRole};

/// The PyTorch values printed by the script above.
#[rustfmt::skip]
#[allow(clippy::excessive_precision)] // float64 references, rounded to f32 on purpose
mod expected {
    // LENET300
    pub const LENET300_NAMES: [&str; 6] = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"];
    pub const LENET300_EVAL: [f32; 20] = [-1.01837194e+00, 7.11831367e-01, -1.48262712e-01, 4.93266718e-01, -9.09728100e-02, -5.63893406e-01, -1.65012207e-01, -1.76517589e+00, -9.66391684e-02, 8.95983014e-01, -4.74412088e-01, 9.17261115e-02, -3.19239354e-01, 4.63054182e-01, -3.38344202e-02, -1.91285197e-01, -5.28232344e-01, -1.33732842e+00, 4.55344731e-01, 1.28451768e-01];
    pub const LENET300_WGRADS: [f32; 3] = [3.57752038e+01, 2.03992611e+01, 1.21025525e+01];
    // LENET5
    pub const LENET5_NAMES: [&str; 8] = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"];
    pub const LENET5_EVAL: [f32; 20] = [-1.34376422e+00, 2.54845613e+00, -4.62476408e-01, -1.64589399e+00, 1.65838979e+00, 1.87452796e+00, 2.75380402e-04, 5.37925433e+00, 4.20734229e-01, 1.97390911e-02, -2.94133716e+00, 9.17690060e-01, 4.17564184e-01, -2.67925880e+00, 1.19668568e+00, 8.37314864e-01, -1.80059848e+00, 5.87113001e+00, 1.21272407e-01, -3.14568338e-01];
    pub const LENET5_WGRADS: [f32; 4] = [1.24270963e+01, 6.90768470e+01, 9.69151973e+01, 8.51396844e+01];
    // MLP
    pub const MLP_NAMES: [&str; 8] = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias", "fc4.weight", "fc4.bias"];
    pub const MLP_EVAL: [f32; 20] = [6.35140838e-01, 5.64564059e-01, 5.46544758e-01, -9.73653720e-01, -8.91940961e-02, -1.02766895e-01, -6.28183546e-01, -3.49173550e-01, -2.35841213e-01, 5.93296332e-01, -7.86002597e-01, -1.65654822e-01, -4.74696446e-02, -1.05243901e+00, -4.99955151e-01, 2.73116261e-02, -8.65426077e-01, -7.46009189e-01, -3.90325219e-01, 8.81848464e-01];
    pub const MLP_WGRADS: [f32; 4] = [1.98642686e+01, 5.84595702e+00, 5.31604626e+00, 3.93338181e+00];
    // CIFAR_LENET_K89
    pub const CIFAR_LENET_K89_NAMES: [&str; 10] = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"];
    pub const CIFAR_LENET_K89_EVAL: [f32; 20] = [-1.82789559e+00, 2.64550523e+00, 9.64529884e-01, -1.54258095e+00, -6.35544050e-01, 1.50873622e+00, -1.04377612e+00, -6.73329228e-01, -1.27844829e+00, 3.30608628e-01, -1.51541342e+00, 2.18556940e+00, 5.60356745e-01, -1.26945651e+00, -4.21736291e-01, 4.99896257e-01, -1.67645734e+00, -3.91757503e-02, -2.25399431e-01, -1.08631587e-01];
    pub const CIFAR_LENET_K89_WGRADS: [f32; 5] = [2.65826674e+01, 3.95134986e+01, 1.88100079e+01, 2.91654332e+01, 2.22863216e+01];
    // CIFAR_LENET_GRAY
    pub const CIFAR_LENET_GRAY_NAMES: [&str; 10] = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"];
    pub const CIFAR_LENET_GRAY_EVAL: [f32; 20] = [-1.62365351e+00, 7.11126109e-01, 1.70307382e+00, -1.70061592e+00, 5.88269298e-01, -6.00613275e-01, -3.11940244e+00, 9.72339191e-01, -2.87338571e+00, -3.53152906e+00, -7.26923783e-01, 3.60153547e-01, -1.08497934e-01, -1.02638589e+00, 4.30499038e-01, -1.68202908e+00, -2.30156169e+00, 5.33367303e-01, -2.32916044e+00, -2.77410804e+00];
    pub const CIFAR_LENET_GRAY_WGRADS: [f32; 5] = [8.17647448e+00, 2.05307757e+01, 5.80986838e+01, 3.14690136e+01, 2.90988962e+01];
    // VGG16_HALF
    pub const VGG16_HALF_NAMES: [&str; 79] = ["features.0.weight", "features.1.weight", "features.1.bias", "features.1.running_mean", "features.1.running_var", "features.3.weight", "features.4.weight", "features.4.bias", "features.4.running_mean", "features.4.running_var", "features.7.weight", "features.8.weight", "features.8.bias", "features.8.running_mean", "features.8.running_var", "features.10.weight", "features.11.weight", "features.11.bias", "features.11.running_mean", "features.11.running_var", "features.14.weight", "features.15.weight", "features.15.bias", "features.15.running_mean", "features.15.running_var", "features.17.weight", "features.18.weight", "features.18.bias", "features.18.running_mean", "features.18.running_var", "features.20.weight", "features.21.weight", "features.21.bias", "features.21.running_mean", "features.21.running_var", "features.24.weight", "features.25.weight", "features.25.bias", "features.25.running_mean", "features.25.running_var", "features.27.weight", "features.28.weight", "features.28.bias", "features.28.running_mean", "features.28.running_var", "features.30.weight", "features.31.weight", "features.31.bias", "features.31.running_mean", "features.31.running_var", "features.34.weight", "features.35.weight", "features.35.bias", "features.35.running_mean", "features.35.running_var", "features.37.weight", "features.38.weight", "features.38.bias", "features.38.running_mean", "features.38.running_var", "features.40.weight", "features.41.weight", "features.41.bias", "features.41.running_mean", "features.41.running_var", "classifier.0.weight", "classifier.0.bias", "classifier.1.weight", "classifier.1.bias", "classifier.1.running_mean", "classifier.1.running_var", "classifier.3.weight", "classifier.3.bias", "classifier.4.weight", "classifier.4.bias", "classifier.4.running_mean", "classifier.4.running_var", "classifier.6.weight", "classifier.6.bias"];
    pub const VGG16_HALF_EVAL: [f32; 40] = [5.90838191e-01, -8.19077921e-03, -6.34499971e-01, 1.36728165e-02, 5.46857053e-02, 1.07125223e-01, -1.28473123e-01, -1.82693603e-02, 2.31170421e-01, 2.54692160e-01, 5.78577011e-01, 4.82117705e-03, -6.49056756e-01, 1.56543819e-02, 4.61119777e-02, 1.03318016e-01, -1.04686132e-01, -1.38333389e-02, 2.27758378e-01, 2.43690660e-01, 6.08732107e-01, 1.91313118e-02, -6.27178977e-01, 2.38097027e-02, 5.56658426e-02, 1.19296722e-01, -1.13636723e-01, -1.39960696e-02, 2.17173011e-01, 2.61335394e-01, 5.90945965e-01, 5.18620498e-03, -6.47662136e-01, 3.18414092e-02, 5.20823888e-02, 9.89012913e-02, -1.49694953e-01, -1.14648418e-02, 2.37390604e-01, 2.58069809e-01];
    pub const VGG16_HALF_WGRADS: [f32; 16] = [3.35972388e+02, 8.83006115e+02, 6.26685850e+02, 7.35819197e+02, 5.61342775e+02, 6.52525127e+02, 5.50098842e+02, 4.72099153e+02, 5.29178486e+02, 4.46099039e+02, 4.17802394e+02, 3.41052712e+02, 2.87492992e+02, 5.45244718e+01, 4.08773945e+01, 3.67051476e+01];
    pub const VGG16_HALF_TRAIN: [f32; 40] = [6.93951796e-01, -1.33959807e+00, -6.27600235e-01, 6.00001745e-01, 7.76825686e-01, 6.45347808e-01, 8.90694405e-01, -5.61899354e-01, 1.29206287e+00, 2.73042787e+00, 5.41263550e-01, 1.12364000e-01, 1.35415857e+00, -1.62943727e+00, -1.55960408e+00, 4.94760300e-02, -8.57827883e-01, 1.21143540e+00, 4.73047178e-01, 3.76707353e-01, 1.07038966e+00, 7.55448739e-01, -4.49569527e-01, 1.44373191e-02, -1.25571415e-01, -1.72439847e+00, -2.49274706e-01, 1.25970259e+00, 1.36143828e+00, 1.37706803e-01, 2.00082002e+00, 2.78609840e-01, 4.74955713e-01, -2.05471871e+00, -1.07863177e-01, 3.36435767e-01, -1.55675221e+00, 1.20321139e+00, 1.47152671e+00, 2.58239025e-01];
    pub const VGG16_HALF_STATS: [f32; 4] = [-2.00482788e-01, 3.67635720e+01, 2.95212248e-01, 3.10074187e+02];
    pub const VGG16_HALF_BNGRADS: [f32; 2] = [8.06865824e+01, 5.32622799e+01];
    // RESNET20
    pub const RESNET20_NAMES: [&str; 97] = ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias", "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var", "layer1.0.conv2.weight", "layer1.0.bn2.weight", "layer1.0.bn2.bias", "layer1.0.bn2.running_mean", "layer1.0.bn2.running_var", "layer1.1.conv1.weight", "layer1.1.bn1.weight", "layer1.1.bn1.bias", "layer1.1.bn1.running_mean", "layer1.1.bn1.running_var", "layer1.1.conv2.weight", "layer1.1.bn2.weight", "layer1.1.bn2.bias", "layer1.1.bn2.running_mean", "layer1.1.bn2.running_var", "layer1.2.conv1.weight", "layer1.2.bn1.weight", "layer1.2.bn1.bias", "layer1.2.bn1.running_mean", "layer1.2.bn1.running_var", "layer1.2.conv2.weight", "layer1.2.bn2.weight", "layer1.2.bn2.bias", "layer1.2.bn2.running_mean", "layer1.2.bn2.running_var", "layer2.0.conv1.weight", "layer2.0.bn1.weight", "layer2.0.bn1.bias", "layer2.0.bn1.running_mean", "layer2.0.bn1.running_var", "layer2.0.conv2.weight", "layer2.0.bn2.weight", "layer2.0.bn2.bias", "layer2.0.bn2.running_mean", "layer2.0.bn2.running_var", "layer2.1.conv1.weight", "layer2.1.bn1.weight", "layer2.1.bn1.bias", "layer2.1.bn1.running_mean", "layer2.1.bn1.running_var", "layer2.1.conv2.weight", "layer2.1.bn2.weight", "layer2.1.bn2.bias", "layer2.1.bn2.running_mean", "layer2.1.bn2.running_var", "layer2.2.conv1.weight", "layer2.2.bn1.weight", "layer2.2.bn1.bias", "layer2.2.bn1.running_mean", "layer2.2.bn1.running_var", "layer2.2.conv2.weight", "layer2.2.bn2.weight", "layer2.2.bn2.bias", "layer2.2.bn2.running_mean", "layer2.2.bn2.running_var", "layer3.0.conv1.weight", "layer3.0.bn1.weight", "layer3.0.bn1.bias", "layer3.0.bn1.running_mean", "layer3.0.bn1.running_var", "layer3.0.conv2.weight", "layer3.0.bn2.weight", "layer3.0.bn2.bias", "layer3.0.bn2.running_mean", "layer3.0.bn2.running_var", "layer3.1.conv1.weight", "layer3.1.bn1.weight", "layer3.1.bn1.bias", "layer3.1.bn1.running_mean", "layer3.1.bn1.running_var", "layer3.1.conv2.weight", "layer3.1.bn2.weight", "layer3.1.bn2.bias", "layer3.1.bn2.running_mean", "layer3.1.bn2.running_var", "layer3.2.conv1.weight", "layer3.2.bn1.weight", "layer3.2.bn1.bias", "layer3.2.bn1.running_mean", "layer3.2.bn1.running_var", "layer3.2.conv2.weight", "layer3.2.bn2.weight", "layer3.2.bn2.bias", "layer3.2.bn2.running_mean", "layer3.2.bn2.running_var", "linear.weight", "linear.bias"];
    pub const RESNET20_EVAL: [f32; 30] = [3.46108442e+00, -3.24447145e+00, 2.01842284e+00, 1.53724935e+00, 1.04373952e+01, -4.91643602e+00, -6.08661119e+00, 3.17474034e+00, -3.71799470e-01, 5.61304428e+00, 3.68366513e+00, -2.77668887e+00, 2.13961500e+00, 1.65176552e+00, 1.04195499e+01, -5.11241258e+00, -6.25264014e+00, 3.40907740e+00, -4.02912044e-01, 5.75720181e+00, 3.93800897e+00, -3.25849916e+00, 2.46617567e+00, 1.77847350e+00, 1.09792286e+01, -5.20914488e+00, -6.35273752e+00, 3.47506153e+00, -4.15215219e-01, 6.12421873e+00];
    pub const RESNET20_WGRADS: [f32; 20] = [9.65021003e+00, 1.76450837e+01, 1.39694968e+01, 1.19404010e+01, 9.73332841e+00, 9.07193847e+00, 7.57463378e+00, 7.93008825e+00, 9.20208928e+00, 8.79369472e+00, 7.46850728e+00, 7.00273546e+00, 6.20027614e+00, 6.68156957e+00, 7.58499647e+00, 7.73238318e+00, 6.50060845e+00, 6.37690885e+00, 5.67855417e+00, 2.91346922e+01];
    pub const RESNET20_TRAIN: [f32; 30] = [-3.78329312e-02, -3.95933240e-01, -5.74897682e-01, -7.37511455e-01, 2.71291757e+00, -3.53193308e+00, -8.64803488e-01, 2.43373242e+00, -1.12059595e+00, 4.50548948e-01, 2.08472559e-01, -4.45458516e-01, -4.29534659e-01, -8.67666877e-01, 3.22758561e+00, -3.44538820e+00, -9.93280969e-01, 2.43752332e+00, -1.30435551e+00, 8.25738759e-01, -4.78345583e-01, -6.07042072e-01, -3.69622917e-01, -6.88836163e-01, 2.70909441e+00, -3.57951768e+00, -9.80759231e-01, 2.33801106e+00, -1.04959621e+00, 3.39476682e-01];
    pub const RESNET20_STATS: [f32; 4] = [7.40060610e-03, 1.81042175e+01, 2.80230658e-01, 7.68842312e+01];
    pub const RESNET20_BNGRADS: [f32; 2] = [2.72729612e+00, 1.95383165e+00];
}
use expected::*;

/// murmur3 fmix32 of `(i + 0x9E3779B9·(j+1)) mod 2³²`, scaled to [0, 1) — the script's `unif`.
fn unif(n: usize, j: u64) -> Vec<f64> {
    const M: u64 = 0xFFFF_FFFF;
    (0..n as u64)
        .map(|i| {
            let mut x = (i + 0x9E37_79B9 * (j + 1)) & M;
            x ^= x >> 16;
            x = (x * 0x85EB_CA6B) & M;
            x ^= x >> 13;
            x = (x * 0xC2B2_AE35) & M;
            x ^= x >> 16;
            x as f64 / 4_294_967_296.0
        })
        .collect()
}

/// The script's `fill`: every parameter and buffer from the formula, in state_dict order.
fn fill(model: &dyn Model) {
    for (j, p) in model.params().iter().enumerate() {
        let dims = p.var.dims().to_vec();
        let n: usize = dims.iter().product();
        let u = unif(n, j as u64);
        let v: Vec<f32> = u
            .iter()
            .map(|&u| {
                let s = 2.0 * u - 1.0;
                (match p.role {
                    ParamRole::Weight(_) => s * (6.0 / (n / dims[0]) as f64).sqrt(),
                    ParamRole::Bias => 0.1 * s,
                    ParamRole::BnWeight => 1.0 + 0.2 * s,
                    ParamRole::BnBias => 0.1 * s,
                    ParamRole::Buffer if p.name.ends_with("running_var") => 1.0 + 0.5 * u,
                    ParamRole::Buffer => 0.1 * s,
                }) as f32
            })
            .collect();
        p.var
            .set(&Tensor::from_vec(v, dims.as_slice(), &Device::Cpu).unwrap())
            .unwrap();
    }
}

/// The script's `inputs`.
fn input(shape: [usize; 4]) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = unif(n, 1000)
        .iter()
        .map(|&u| (2.0 * u - 1.0) as f32)
        .collect();
    Tensor::from_vec(v, &shape, &Device::Cpu).unwrap()
}

/// `|got − want| ≤ 1e-4 · max|want|` element-wise: 1e-4 relative to the vector's magnitude. (PyTorch's
/// own float32 run of the VGG train-mode case, BatchNorm over 16 values per channel, is off from the
/// float64 answer by 1.2e-5 of the magnitude; everything else agrees to about 1e-6.)
fn assert_close(label: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let scale = want.iter().fold(0f32, |m, w| m.max(w.abs()));
    let tol = 1e-4 * scale;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{label}[{i}]: got {g}, PyTorch {w} (|diff| {} > tol {tol})",
            (g - w).abs()
        );
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn norm(t: &Tensor) -> f32 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// What a golden case expects; the BatchNorm fields are `None` for networks without BatchNorm.
struct Golden<'a> {
    names: &'a [&'a str],
    eval: &'a [f32],
    weight_grads: &'a [f32],
    train: Option<&'a [f32]>,
    stats: Option<&'a [f32; 4]>,
    bn_grads: Option<&'a [f32; 2]>,
}

/// State-dict names in order, eval logits, then one train-mode forward + backward of `Σ logits·c`: train logits (equal to eval
/// without BatchNorm), running statistics of the first and last BatchNorm, gradient norms of every
/// conv/fc weight and of the first BatchNorm's gamma and beta.
fn check(arch: &str, cfg: &ArchConfig, shape: [usize; 4], want: Golden<'_>) {
    let model = build(arch, cfg, 0, &Device::Cpu).unwrap();
    let names: Vec<&str> = model.params().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, want.names, "{arch}: state_dict names and order");
    fill(model.as_ref());
    let x = input(shape);
    let eval = flat(&model.forward_t(&x, false).unwrap());
    assert_close(&format!("{arch} eval"), &eval, want.eval);

    let train = model.forward_t(&x, true).unwrap();
    match want.train {
        Some(t) => assert_close(&format!("{arch} train"), &flat(&train), t),
        None => assert_eq!(
            flat(&train),
            eval,
            "{arch}: train == eval without BatchNorm"
        ),
    }

    let params: Vec<_> = model.params().iter().collect();
    if let Some(want_stats) = want.stats {
        let named = |suffix: &str| -> Vec<f32> {
            params
                .iter()
                .filter(|p| p.name.ends_with(suffix))
                .map(|p| p.var.sum_all().unwrap().to_scalar::<f32>().unwrap())
                .collect()
        };
        let (means, vars) = (named("running_mean"), named("running_var"));
        let stats = [
            means[0],
            vars[0],
            means[means.len() - 1],
            vars[vars.len() - 1],
        ];
        assert_close(&format!("{arch} running stats"), &stats, want_stats);
    }

    let c: Vec<f32> = unif(train.elem_count(), 2000)
        .iter()
        .map(|&u| (2.0 * u - 1.0) as f32)
        .collect();
    let c = Tensor::from_vec(c, train.dims(), &Device::Cpu).unwrap();
    let grads = (&train * &c)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let grad_norm = |t: &Tensor| norm(grads.get(t).expect("gradient present"));
    let got: Vec<f32> = model
        .prunable()
        .iter()
        .map(|w| grad_norm(w.var.as_tensor()))
        .collect();
    assert_close(
        &format!("{arch} weight gradient norms"),
        &got,
        want.weight_grads,
    );
    if let Some(want_bn) = want.bn_grads {
        let gamma = params
            .iter()
            .find(|p| p.role == ParamRole::BnWeight)
            .unwrap();
        let beta = params.iter().find(|p| p.role == ParamRole::BnBias).unwrap();
        let got = [
            grad_norm(gamma.var.as_tensor()),
            grad_norm(beta.var.as_tensor()),
        ];
        assert_close(&format!("{arch} BatchNorm gradient norms"), &got, want_bn);
    }
    for p in params.iter().filter(|p| p.role == ParamRole::Buffer) {
        assert!(
            grads.get(p.var.as_tensor()).is_none(),
            "{} has a gradient",
            p.name
        );
    }
}

fn plain<'a>(names: &'a [&'a str], eval: &'a [f32], weight_grads: &'a [f32]) -> Golden<'a> {
    Golden {
        names,
        eval,
        weight_grads,
        train: None,
        stats: None,
        bn_grads: None,
    }
}

#[test]
fn lenet300_matches_pytorch() {
    let want = plain(&LENET300_NAMES, &LENET300_EVAL, &LENET300_WGRADS);
    check("lenet300", &ArchConfig::new(), [2, 1, 28, 28], want);
}

#[test]
fn lenet5_matches_pytorch() {
    let want = plain(&LENET5_NAMES, &LENET5_EVAL, &LENET5_WGRADS);
    check("lenet5", &ArchConfig::new(), [2, 1, 28, 28], want);
}

#[test]
fn mlp_matches_pytorch() {
    let cfg = ArchConfig::new().with_hidden(vec![64, 32, 16]);
    check(
        "mlp",
        &cfg,
        [2, 1, 28, 28],
        plain(&MLP_NAMES, &MLP_EVAL, &MLP_WGRADS),
    );
}

#[test]
fn cifar_lenet_seed004_kernels_match_pytorch() {
    // Kernels 8 and 9: conv1 gives 25×25, so the first pool drops a row and a column (floor mode).
    let cfg = ArchConfig::new().with_kernels(vec![8, 9]);
    let want = plain(
        &CIFAR_LENET_K89_NAMES,
        &CIFAR_LENET_K89_EVAL,
        &CIFAR_LENET_K89_WGRADS,
    );
    check("cifar_lenet", &cfg, [2, 3, 32, 32], want);
}

#[test]
fn cifar_lenet_one_channel_matches_pytorch() {
    let cfg = ArchConfig::new().with_in_channels(1);
    let want = plain(
        &CIFAR_LENET_GRAY_NAMES,
        &CIFAR_LENET_GRAY_EVAL,
        &CIFAR_LENET_GRAY_WGRADS,
    );
    check("cifar_lenet", &cfg, [2, 1, 32, 32], want);
}

#[test]
fn vgg16_half_matches_pytorch_eval_and_train() {
    let want = Golden {
        names: &VGG16_HALF_NAMES,
        eval: &VGG16_HALF_EVAL,
        weight_grads: &VGG16_HALF_WGRADS,
        train: Some(&VGG16_HALF_TRAIN),
        stats: Some(&VGG16_HALF_STATS),
        bn_grads: Some(&VGG16_HALF_BNGRADS),
    };
    check("vgg16_half", &ArchConfig::new(), [4, 3, 32, 32], want);
}

#[test]
fn resnet20_matches_pytorch_eval_and_train() {
    let want = Golden {
        names: &RESNET20_NAMES,
        eval: &RESNET20_EVAL,
        weight_grads: &RESNET20_WGRADS,
        train: Some(&RESNET20_TRAIN),
        stats: Some(&RESNET20_STATS),
        bn_grads: Some(&RESNET20_BNGRADS),
    };
    check("resnet20", &ArchConfig::new(), [3, 3, 32, 32], want);
}
