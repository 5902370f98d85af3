"""PyTorch statement of the official SKD-TSTSAN module, for parity tests of the Rust model.

Usage: skd_tstsan.py [--classes K] [--amp A] [--seed S] [--batch B] --out DIR

Follows the specification in shared/reference/SKD-TSTSAN.md (sections 1-6 and 13): module names,
registration order and therefore state_dict keys are those of the official `SKD_TSTSAN`, so a
state_dict written here loads into the official class and vice versa.

Writes
  DIR/state_dict.pth          torch.save(model.state_dict()): an OrderedDict, as the official
                              training script saves it
  DIR/state_dict.safetensors  the same tensors
  DIR/probe.safetensors       x (B,38,48,48) uniform in [0,1] and the six eval-mode outputs:
                              logits, ac1_logits, ac2_logits, final_feature, ac1_feature,
                              ac2_feature
and prints a one-line JSON summary. BatchNorm statistics are measured on random inputs and then,
with the affine terms, perturbed before saving, so that an eval-mode comparison exercises them
instead of the identity defaults.
"""
import argparse
import json
import math
import os

import torch
from safetensors.torch import save_file
from torch import nn


class Conv2D_activa(nn.Module):
    """Reflection pad (only when pad > 0), bias-free conv, optional ReLU."""

    def __init__(self, cin, cout, k, stride, pad=0, relu=True):
        super().__init__()
        self.pad = nn.ReflectionPad2d(pad) if pad > 0 else None
        self.conv2d = nn.Conv2d(cin, cout, k, stride, padding=0, bias=False)
        self.activation = nn.ReLU() if relu else None

    def forward(self, x):
        if self.pad is not None:
            x = self.pad(x)
        x = self.conv2d(x)
        return self.activation(x) if self.activation is not None else x


class ResBlk(nn.Module):
    """x + conv(relu(conv(x))), both 3x3 with reflection padding, 32 channels inside."""

    def __init__(self, cin, cout, mid=32):
        super().__init__()
        self.cba_1 = Conv2D_activa(cin, mid, 3, 1, 1, relu=True)
        self.cba_2 = Conv2D_activa(mid, cout, 3, 1, 1, relu=False)

    def forward(self, x):
        return self.cba_2(self.cba_1(x)) + x


class Encoder_No_texture(nn.Module):
    """Motion encoder of the magnification stage: (N, dim_in, 48, 48) -> (N, 32, 24, 24)."""

    def __init__(self, dim_in):
        super().__init__()
        self.cba_1 = Conv2D_activa(dim_in, 16, 7, 1, 3)
        self.cba_2 = Conv2D_activa(16, 32, 3, 2, 1)
        self.resblks = nn.Sequential(ResBlk(32, 32), ResBlk(32, 32), ResBlk(32, 32))
        self.motion_cba = Conv2D_activa(32, 32, 3, 1, 1)
        self.motion_resblks = nn.Sequential(ResBlk(32, 32), ResBlk(32, 32))

    def forward(self, x):
        x = self.resblks(self.cba_2(self.cba_1(x)))
        return self.motion_resblks(self.motion_cba(x))


class Manipulator(nn.Module):
    """motion_B + h(amp * g(motion_B - motion_A)); the official code adds to B, not A."""

    def __init__(self):
        super().__init__()
        self.g = Conv2D_activa(32, 32, 7, 1, 3, relu=True)
        self.h_conv = Conv2D_activa(32, 32, 3, 1, 1, relu=False)
        self.h_resblk = ResBlk(32, 32)

    def forward(self, motion_a, motion_b, amp):
        d = self.g(motion_b - motion_a) * amp
        return motion_b + self.h_resblk(self.h_conv(d))


class TemporalShift(nn.Module):
    """Shifts channel groups between the two temporal segments, then runs the wrapped conv.

    Input rows come in pairs (segment 0, segment 1) per sample. The first C/8 channels of
    segment 0 take segment 1's values, the next C/8 of segment 1 take segment 0's; the vacated
    slots are zero and the other channels pass through.
    """

    def __init__(self, net, n_segment=2, n_div=8):
        super().__init__()
        self.net = net
        self.n_segment = n_segment
        self.fold_div = n_div

    def forward(self, x):
        nt, c, h, w = x.shape
        v = x.view(nt // self.n_segment, self.n_segment, c, h, w)
        fold = c // self.fold_div
        out = torch.zeros_like(v)
        out[:, :-1, :fold] = v[:, 1:, :fold]
        out[:, 1:, fold:2 * fold] = v[:, :-1, fold:2 * fold]
        out[:, :, 2 * fold:] = v[:, :, 2 * fold:]
        return self.net(out.view(nt, c, h, w))


class eca_layer_2d_v2(nn.Module):
    """Channel attention from one 1-D conv applied to both the average- and the max-pooled map."""

    def __init__(self, channel):
        super().__init__()
        t = int(abs(math.log2(channel) + 1) / 2)
        k = t if t % 2 else t + 1
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def _along_channels(self, y):
        # (N, C, 1, 1) -> (N, 1, C) -> conv -> back to (N, C, 1, 1)
        return self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)

    def forward(self, x):
        w = self.sigmoid(self._along_channels(self.avg_pool(x)) + self._along_channels(self.max_pool(x)))
        return x * w.expand_as(x)


class ConsensusModule(nn.Module):
    """Mean over the segment axis of a (B, segments, features) tensor."""

    def forward(self, x):
        return x.mean(dim=1, keepdim=True).squeeze(1)


def _conv(cin, cout, k, pad):
    return nn.Conv2d(cin, cout, kernel_size=k, stride=1, padding=pad)


class SKD_TSTSAN(nn.Module):
    """Three streams (L: 16 local blocks, S: whole face, T: two flow fields) after learned
    motion magnification, a 3-stage trunk and two auxiliary classifier heads."""

    def __init__(self, out_channels=5, amp_factor=5):
        super().__init__()
        # Attribute creation order is the state_dict order of the official module.
        self.Aug_Encoder_L = Encoder_No_texture(16)
        self.Aug_Encoder_S = Encoder_No_texture(1)
        self.Aug_Encoder_T = Encoder_No_texture(2)
        self.Aug_Manipulator_L = Manipulator()
        self.Aug_Manipulator_S = Manipulator()
        self.Aug_Manipulator_T = Manipulator()

        self.conv1_L = _conv(32, 64, 5, 0)
        self.conv1_S = _conv(32, 64, 5, 0)
        self.conv1_T = _conv(32, 64, 5, 0)
        self.bn1_L = nn.BatchNorm2d(64)
        self.bn1_S = nn.BatchNorm2d(64)
        self.bn1_T = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=5, stride=2, padding=2)

        self.AC1_conv1_L = _conv(64, 128, 3, 1)
        self.AC1_conv1_S = _conv(64, 128, 3, 1)
        self.AC1_conv1_T = TemporalShift(_conv(64, 128, 3, 1))
        self.AC1_bn1_L = nn.BatchNorm2d(128)
        self.AC1_bn1_S = nn.BatchNorm2d(128)
        self.AC1_bn1_T = nn.BatchNorm2d(128)
        self.AC1_conv2_L = _conv(128, 128, 3, 1)
        self.AC1_conv2_S = _conv(128, 128, 3, 1)
        self.AC1_conv2_T = TemporalShift(_conv(128, 128, 3, 1))
        self.AC1_bn2_L = nn.BatchNorm2d(128)
        self.AC1_bn2_S = nn.BatchNorm2d(128)
        self.AC1_bn2_T = nn.BatchNorm2d(128)
        self.AC1_pool = nn.AdaptiveAvgPool2d(1)
        self.AC1_fc = nn.Linear(384, out_channels)

        self.conv2_L = _conv(64, 64, 3, 1)
        self.conv2_S = _conv(64, 64, 3, 1)
        self.conv2_T = TemporalShift(_conv(64, 64, 3, 1))
        self.bn2_L = nn.BatchNorm2d(64)
        self.bn2_S = nn.BatchNorm2d(64)
        self.bn2_T = nn.BatchNorm2d(64)
        self.conv3_L = _conv(64, 64, 3, 1)
        self.conv3_S = _conv(64, 64, 3, 1)
        self.conv3_T = TemporalShift(_conv(64, 64, 3, 1))
        self.bn3_L = nn.BatchNorm2d(64)
        self.bn3_S = nn.BatchNorm2d(64)
        self.bn3_T = nn.BatchNorm2d(64)
        self.avgpool = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)

        self.AC2_conv1_L = _conv(64, 128, 3, 1)
        self.AC2_conv1_S = _conv(64, 128, 3, 1)
        self.AC2_conv1_T = TemporalShift(_conv(64, 128, 3, 1))
        self.AC2_bn1_L = nn.BatchNorm2d(128)
        self.AC2_bn1_S = nn.BatchNorm2d(128)
        self.AC2_bn1_T = nn.BatchNorm2d(128)
        self.AC2_conv2_L = _conv(128, 128, 3, 1)
        self.AC2_conv2_S = _conv(128, 128, 3, 1)
        self.AC2_conv2_T = TemporalShift(_conv(128, 128, 3, 1))
        self.AC2_bn2_L = nn.BatchNorm2d(128)
        self.AC2_bn2_S = nn.BatchNorm2d(128)
        self.AC2_bn2_T = nn.BatchNorm2d(128)
        self.AC2_pool = nn.AdaptiveAvgPool2d(1)
        self.AC2_fc = nn.Linear(384, out_channels)

        self.conv4_L = _conv(64, 128, 3, 1)
        self.conv4_S = _conv(64, 128, 3, 1)
        self.conv4_T = TemporalShift(_conv(64, 128, 3, 1))
        self.bn4_L = nn.BatchNorm2d(128)
        self.bn4_S = nn.BatchNorm2d(128)
        self.bn4_T = nn.BatchNorm2d(128)
        self.conv5_L = _conv(128, 128, 3, 1)
        self.conv5_S = _conv(128, 128, 3, 1)
        self.conv5_T = TemporalShift(_conv(128, 128, 3, 1))
        self.bn5_L = nn.BatchNorm2d(128)
        self.bn5_S = nn.BatchNorm2d(128)
        self.bn5_T = nn.BatchNorm2d(128)
        self.all_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc2 = nn.Linear(384, out_channels)

        self.ECA1 = eca_layer_2d_v2(64)
        self.ECA2 = eca_layer_2d_v2(64)
        self.ECA3 = eca_layer_2d_v2(64)
        self.ECA4 = eca_layer_2d_v2(128)
        self.ECA5 = eca_layer_2d_v2(128)
        self.AC1_ECA1 = eca_layer_2d_v2(128)
        self.AC1_ECA2 = eca_layer_2d_v2(128)
        self.AC2_ECA1 = eca_layer_2d_v2(128)
        self.AC2_ECA2 = eca_layer_2d_v2(128)

        self.amp_factor = amp_factor
        self.consensus = ConsensusModule()
        self.dropout = nn.Dropout(0.2)

    def _head(self, prefix, l, s, t, pool):
        """An auxiliary head ("AC1_" or "AC2_"): two conv-BN-ReLU layers per stream, ECA after
        each on L, then pooled and concatenated into the 384-d feature."""
        m = lambda name: getattr(self, prefix + name)
        l = m("ECA1")(self.relu(m("bn1_L")(m("conv1_L")(l))))
        l = m("ECA2")(self.relu(m("bn2_L")(m("conv2_L")(l))))
        s = self.relu(m("bn1_S")(m("conv1_S")(s)))
        s = self.relu(m("bn2_S")(m("conv2_S")(s)))
        t = self.relu(m("bn1_T")(m("conv1_T")(t)))
        t = self.relu(m("bn2_T")(m("conv2_T")(t)))
        return self._pool_cat(l, s, t, pool)

    def _pool_cat(self, l, s, t, pool):
        """Global average pool each stream; average T's two segments; concatenate L, S, T."""
        b = l.shape[0]
        l = pool(l).view(b, -1)
        s = pool(s).view(b, -1)
        t = self.consensus(pool(t).view(b, 2, -1))
        return torch.cat([l, s, t], dim=1)

    def forward(self, x):
        b = x.shape[0]
        x1, x1_onset = x[:, 2:18], x[:, 18:34]
        x2, x2_onset = x[:, 0:1], x[:, 1:2]
        x3 = torch.reshape(x[:, 34:38], (2 * b, 2, 48, 48))
        x3_onset = torch.zeros(2 * b, 2, 48, 48, dtype=x.dtype, device=x.device)

        l = self.Aug_Manipulator_L(self.Aug_Encoder_L(x1_onset), self.Aug_Encoder_L(x1), self.amp_factor)
        s = self.Aug_Manipulator_S(self.Aug_Encoder_S(x2_onset), self.Aug_Encoder_S(x2), self.amp_factor)
        t = self.Aug_Manipulator_T(self.Aug_Encoder_T(x3_onset), self.Aug_Encoder_T(x3), self.amp_factor)

        # stage 1
        l = self.maxpool(self.ECA1(self.relu(self.bn1_L(self.conv1_L(l)))))
        s = self.maxpool(self.relu(self.bn1_S(self.conv1_S(s))))
        t = self.maxpool(self.relu(self.bn1_T(self.conv1_T(t))))

        ac1_feature = self._head("AC1_", l, s, t, self.AC1_pool)
        ac1_logits = self.AC1_fc(self.dropout(ac1_feature))

        # stage 2
        l = self.ECA2(self.relu(self.bn2_L(self.conv2_L(l))))
        l = self.avgpool(self.ECA3(self.relu(self.bn3_L(self.conv3_L(l)))))
        s = self.relu(self.bn2_S(self.conv2_S(s)))
        s = self.avgpool(self.relu(self.bn3_S(self.conv3_S(s))))
        t = self.relu(self.bn2_T(self.conv2_T(t)))
        t = self.avgpool(self.relu(self.bn3_T(self.conv3_T(t))))

        ac2_feature = self._head("AC2_", l, s, t, self.AC2_pool)
        ac2_logits = self.AC2_fc(self.dropout(ac2_feature))

        # stage 3
        l = self.ECA4(self.relu(self.bn4_L(self.conv4_L(l))))
        l = self.ECA5(self.relu(self.bn5_L(self.conv5_L(l))))
        s = self.relu(self.bn4_S(self.conv4_S(s)))
        s = self.relu(self.bn5_S(self.conv5_S(s)))
        t = self.relu(self.bn4_T(self.conv4_T(t)))
        t = self.relu(self.bn5_T(self.conv5_T(t)))

        final_feature = self._pool_cat(l, s, t, self.all_avgpool)
        logits = self.fc2(self.dropout(final_feature))
        return logits, ac1_logits, ac2_logits, final_feature, ac1_feature, ac2_feature


def spec_keys(k):
    """The section 6 table of the specification, rebuilt from its naming rules: (key, shape)."""
    keys = []
    enc_in = {"L": 16, "S": 1, "T": 2}

    def magnet_conv(path, shape):
        keys.append((f"{path}.conv2d.weight", shape))

    def resblk(path):
        magnet_conv(f"{path}.cba_1", (32, 32, 3, 3))
        magnet_conv(f"{path}.cba_2", (32, 32, 3, 3))

    for s in "LST":
        e = f"Aug_Encoder_{s}"
        magnet_conv(f"{e}.cba_1", (16, enc_in[s], 7, 7))
        magnet_conv(f"{e}.cba_2", (32, 16, 3, 3))
        for i in range(3):
            resblk(f"{e}.resblks.{i}")
        magnet_conv(f"{e}.motion_cba", (32, 32, 3, 3))
        for i in range(2):
            resblk(f"{e}.motion_resblks.{i}")
    for s in "LST":
        m = f"Aug_Manipulator_{s}"
        magnet_conv(f"{m}.g", (32, 32, 7, 7))
        magnet_conv(f"{m}.h_conv", (32, 32, 3, 3))
        resblk(f"{m}.h_resblk")

    def convs(name, cin, cout, ks):
        for s in "LST":
            p = f"{name}_{s}" + (".net" if s == "T" and name != "conv1" else "")
            keys.append((f"{p}.weight", (cout, cin, ks, ks)))
            keys.append((f"{p}.bias", (cout,)))

    def bns(name, c):
        for s in "LST":
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                keys.append((f"{name}_{s}.{leaf}", (c,)))
            keys.append((f"{name}_{s}.num_batches_tracked", ()))

    def fc(name):
        keys.append((f"{name}.weight", (k, 384)))
        keys.append((f"{name}.bias", (k,)))

    def head(ac):
        convs(f"{ac}_conv1", 64, 128, 3)
        bns(f"{ac}_bn1", 128)
        convs(f"{ac}_conv2", 128, 128, 3)
        bns(f"{ac}_bn2", 128)
        fc(f"{ac}_fc")

    convs("conv1", 32, 64, 5)
    bns("bn1", 64)
    head("AC1")
    convs("conv2", 64, 64, 3)
    bns("bn2", 64)
    convs("conv3", 64, 64, 3)
    bns("bn3", 64)
    head("AC2")
    convs("conv4", 64, 128, 3)
    bns("bn4", 128)
    convs("conv5", 128, 128, 3)
    bns("bn5", 128)
    fc("fc2")
    for name, ks in (("ECA1", 3), ("ECA2", 3), ("ECA3", 3), ("ECA4", 5), ("ECA5", 5),
                     ("AC1_ECA1", 5), ("AC1_ECA2", 5), ("AC2_ECA1", 5), ("AC2_ECA2", 5)):
        keys.append((f"{name}.conv.weight", (1, 1, ks)))
    return keys


def check_against_spec(model, k):
    """Asserts the counts and the state_dict layout the specification states."""
    sd = model.state_dict()
    got = [(name, tuple(t.shape)) for name, t in sd.items()]
    assert got == spec_keys(k), "state_dict keys/shapes differ from the specification's table"
    assert len(sd) == 255, len(sd)
    params = sum(p.numel() for p in model.parameters())
    assert params == 2_940_439 + 1_155 * k, params
    assert all(p.requires_grad for p in model.parameters())
    buffers = list(model.buffers())
    assert len(buffers) == 81, len(buffers)
    assert sum(b.numel() for b in buffers) == 5_787
    inference = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("AC1_", "AC2_")))
    assert inference == 1_608_707 + 385 * k, inference
    per_module = {"Aug_Encoder_L": 118_528, "Aug_Encoder_S": 106_768, "Aug_Encoder_T": 107_552,
                  "Aug_Manipulator_L": 77_824, "conv1_L": 51_264, "AC1_conv2_T": 147_584,
                  "conv2_S": 36_928, "conv4_L": 73_856}
    for name, count in per_module.items():
        got_count = sum(p.numel() for p in getattr(model, name).parameters())
        assert got_count == count, (name, got_count)
    for s in "LST":
        x = torch.zeros(2, 16 if s == "L" else (1 if s == "S" else 2), 48, 48)
        assert getattr(model, f"Aug_Encoder_{s}")(x).abs().max().item() == 0.0
    return params, len(buffers)


def randomise_batchnorm(model, gen, batches=4, batch=8):
    """Moves every BatchNorm off its identity initialisation.

    The statistics are first measured on random inputs (train-mode passes, cumulative average):
    with the identity defaults the activations, which are far smaller than 1, are swamped by the
    BatchNorm shift and every sample gets nearly the same logits, so a parity test would barely
    look at the input. The measured statistics and the affine terms are then perturbed, so that
    a model that confused running_mean with bias or running_var with weight would not match.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.rand(batch, 38, 48, 48, generator=gen))
        for m in bns:
            c = m.num_features
            u = lambda: torch.rand(c, generator=gen)
            m.momentum = 0.1
            m.running_mean.add_((u() - 0.5) * 0.2 * m.running_var.sqrt())
            m.running_var.mul_(0.8 + 0.45 * u())
            m.weight.copy_(1.0 + (u() - 0.5) * 0.4)
            m.bias.copy_((u() - 0.5) * 0.2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--amp", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.classes < 1 or args.batch < 1:
        ap.error("--classes and --batch must be positive")

    torch.manual_seed(args.seed)
    model = SKD_TSTSAN(out_channels=args.classes, amp_factor=args.amp)
    gen = torch.Generator().manual_seed(args.seed + 1)
    randomise_batchnorm(model, gen)
    params, buffers = check_against_spec(model, args.classes)
    model.eval()

    x = torch.rand(args.batch, 38, 48, 48, generator=gen)
    with torch.no_grad():
        outputs = model(x)
    names = ("logits", "ac1_logits", "ac2_logits", "final_feature", "ac1_feature", "ac2_feature")
    shapes = [(args.batch, args.classes)] * 3 + [(args.batch, 384)] * 3
    for name, out, shape in zip(names, outputs, shapes):
        assert tuple(out.shape) == shape, (name, tuple(out.shape))
        assert torch.isfinite(out).all(), name
    if args.batch > 1:
        spread = (outputs[0] - outputs[0][:1]).abs().max().item()
        assert spread > 1e-3, f"logits barely depend on the input (spread {spread})"

    os.makedirs(args.out, exist_ok=True)
    paths = {
        "state_dict": os.path.join(args.out, "state_dict.pth"),
        "safetensors": os.path.join(args.out, "state_dict.safetensors"),
        "probe": os.path.join(args.out, "probe.safetensors"),
    }
    sd = model.state_dict()
    torch.save(sd, paths["state_dict"])
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, paths["safetensors"])
    probe = {"x": x}
    probe.update({name: out.contiguous() for name, out in zip(names, outputs)})
    save_file(probe, paths["probe"])
    print(json.dumps({"keys": len(sd), "params": params, "buffers": buffers, "classes": args.classes,
                      "amp": args.amp, "seed": args.seed, "batch": args.batch, **paths}))


if __name__ == "__main__":
    main()
