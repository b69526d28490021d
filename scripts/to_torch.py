#!/usr/bin/env python3
"""Loads an xray-dp checkpoint into an equivalent PyTorch module.

    /usr/bin/python3 scripts/to_torch.py CKPT.h5                       # summary of the rebuilt module
    /usr/bin/python3 scripts/to_torch.py CKPT.h5 --check IMG...        # probabilities of image files
    /usr/bin/python3 scripts/to_torch.py CKPT.h5 --check IMG... --xray-dp build/xray-dp   # ... vs predict

As a module (scripts/ on sys.path):

    import to_torch
    model = to_torch.load("runs/x/best.h5")      # nn.Module, eval mode, float32, weights loaded
    logits = model(x)                            # x: [B, C, H, W] float, pixels / 255
    p = model.probabilities(x)                   # sigmoid (one output) or softmax rows

Needs Debian's python3-torch, python3-h5py, python3-numpy (python3-pil only for --check).

What the checkpoint holds (docs/models.md has the whole language):
  - root attribute "model": the model description, one layer per line, after an `input CxHxW` line.
  - /params/<i>/weight, /params/<i>/bias (and running_mean, running_var for batchnorm), where <i> is the
    0-based index of the layer among the *layer lines* of the description (the `input` line, blank lines
    and comments do not count). Shapes are PyTorch's: conv [F, C, KH, KW], dense [OUT, IN],
    batchnorm [C].
  - last.h5 of a run with --ema also holds the averaged weights under /optim/ema/<i>/...; best.h5 of such
    a run already holds the averaged weights under /params (the EMA is the model that is kept).
    load(path, ema=True) reads /optim/ema instead of /params.

Index mapping: the module's `layers` is an nn.ModuleList with one entry per layer line, so layer i's
tensors are `layers.<i>.weight`, `layers.<i>.bias`, `layers.<i>.running_mean`, `layers.<i>.running_var`
in state_dict() - the checkpoint's /params/<i>/<name>, one to one. Conv, dense and batchnorm layers are
subclasses of nn.Conv2d, nn.Linear and nn.BatchNorm1d/2d, so the tensors keep PyTorch's own names.

Preprocessing (what xray-dp feeds the model): the image is decoded, converted to 8-bit grayscale (BT.601
luma, (299 R + 587 G + 114 B + 500) / 1000 rounded down; a gray+alpha image keeps its gray channel),
resized to the model's input size (area averaging when shrinking, bilinear on pixel centres when
enlarging, rounded back to uint8), and divided by 255: x = uint8 / 255 as float32, shape [B, 1, H, W].
Nothing else: any normalisation (e.g. the `standardize` layer of resnet-s) is a layer of the model and
therefore inside the module. load_image() below does exactly this (PIL decodes; a lossy JPEG may differ
from xray-dp's stb_image decoder by a grey level here and there, PNG/PGM/BMP are bit-identical).

Semantics that differ from a naive translation, handled here:
  - `pad=same` is Keras-style: total padding max((ceil(H/S)-1)*S + K - H, 0) per axis, half of it (rounded
    down) on top/left and the rest on bottom/right; done with F.pad, then an unpadded conv.
    `pad=N` is PyTorch's padding=N (symmetric). No pad option (or pad=valid) is no padding.
  - the last layer (dense 1 sigmoid, or dense K softmax) returns *logits*, like xray-dp's forward pass:
    its activation is fused into the loss. probabilities() applies it.
  - standardize: y = (x - mean) / max(std, eps) per sample over all C*H*W values, population std.
  - leakyrelu has slope 0.01, elu alpha 1; softmax acts on flat tensors over the features.
  - dropout is nn.Dropout (only active in train mode; xray-dp's masks come from its own counter-based RNG,
    so train-mode outputs differ from xray-dp's by the mask, eval-mode outputs do not).
"""
import argparse
import math
import subprocess
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ACTS = ("linear", "relu", "leakyrelu", "elu", "sigmoid", "tanh", "softmax")
LAYER_KINDS = ("conv", "maxpool", "avgpool", "globalavgpool", "batchnorm", "dropout", "flatten", "dense", "add",
               "standardize")


class ModelTextError(ValueError):
    pass


def activation(name, x):
    if name == "linear":
        return x
    if name == "relu":
        return F.relu(x)
    if name == "leakyrelu":
        return F.leaky_relu(x, 0.01)
    if name == "elu":
        return F.elu(x, 1.0)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "softmax":
        return torch.softmax(x, dim=1)
    raise ValueError(name)


def _dims(s, n, what):
    """'3x3' -> (3, 3); '3' -> (3, 3) for n = 2; '1x128x128' for n = 3."""
    try:
        v = tuple(int(t) for t in s.split("x"))
    except ValueError:
        raise ModelTextError(f"bad {what} '{s}'") from None
    if len(v) == 1 and n == 2:
        v = (v[0], v[0])
    if len(v) != n or min(v) <= 0:
        raise ModelTextError(f"bad {what} '{s}'")
    return v


def parse(text):
    """Model description -> (input (C, H, W), [layer dict]). Each layer dict has: kind, line, name, act,
    in0, in1 (tensor indices: 0 = model input, i + 1 = output of layer i), opts, and the shapes in_shape,
    out_shape, flat. Mirrors src/model.c (xd_model_build) for well-formed text; its error messages are
    only a subset of the C parser's (the C parser is the reference)."""
    inp, layers, names = None, [], {}
    for lineno, raw in enumerate(text.split("\n"), 1):
        tok = raw.split("#")[0].split()
        if not tok:
            continue

        def fail(msg):
            raise ModelTextError(f"line {lineno}: {msg}: {raw.strip()!r}")

        kind = tok[0]
        if kind == "input":
            if inp is not None or layers or len(tok) != 2:
                fail("'input CxHxW' must come once, before any layer")
            inp = _dims(tok[1], 3, "input shape")
            continue
        if inp is None:
            fail("the first line must be 'input CxHxW'")
        L = {"kind": kind, "line": lineno, "name": "", "act": "linear", "in0": len(layers), "in1": -1}
        # like src/model.c: the fixed arguments, then an optional activation (a token without '='), then
        # only key=value options
        nfixed, has_act = {"conv": (2, True), "maxpool": (1, False), "avgpool": (1, False), "batchnorm": (0, True),
                           "add": (1, True), "dropout": (1, False), "dense": (1, True)}.get(kind, (0, False))
        if kind not in ACTS and kind not in LAYER_KINDS:
            fail(f"unknown layer '{kind}'")
        pos = tok[1:1 + nfixed]
        if len(pos) < nfixed or any("=" in t for t in pos):
            fail(f"missing arguments for {kind}")
        rest = tok[1 + nfixed:]
        if has_act and rest and "=" not in rest[0]:
            pos.append(rest.pop(0))
        for t in rest:
            if "=" not in t:
                fail(f"unexpected '{t}'")
        opts = dict(t.split("=", 1) for t in rest)
        refs = [opts.pop("in", None), None]
        L["name"] = opts.pop("name", "")
        if kind in ACTS:
            L["kind"], L["act"] = "act", kind
        elif kind == "conv":
            L["filters"] = int(pos[0])
            L["k"] = _dims(pos[1], 2, "kernel")
            L["stride"] = int(opts.pop("stride", 1))
            pad = opts.pop("pad", "valid")
            L["pad"] = pad if pad in ("same", "valid") else int(pad)
            L["bias"] = opts.pop("bias", "1") != "0"
            if len(pos) > 2:
                L["act"] = pos[2]
        elif kind in ("maxpool", "avgpool"):
            L["k"] = _dims(pos[0], 2, "pool window")
            L["s"] = _dims(opts.pop("stride"), 2, "stride") if "stride" in opts else L["k"]
        elif kind == "batchnorm":
            L["eps"] = float(opts.pop("eps", 1e-5))
            L["momentum"] = float(opts.pop("momentum", 0.1))
            if pos:
                L["act"] = pos[0]
        elif kind == "add":
            refs[1] = pos[0]
            if len(pos) > 1:
                L["act"] = pos[1]
        elif kind == "standardize":
            L["eps"] = float(opts.pop("eps", 1e-3))
        elif kind == "dropout":
            L["rate"] = float(pos[0])
        elif kind == "dense":
            L["units"] = int(pos[0])
            if len(pos) > 1:
                L["act"] = pos[1]
        if opts:
            fail(f"unknown option(s) {sorted(opts)}")
        if L["act"] not in ACTS:
            fail(f"unknown activation '{L['act']}'")
        for r, ref in enumerate(refs):
            if ref is None:
                continue
            if ref == "input":
                t = 0
            elif ref in names:
                t = names[ref] + 1
            else:
                fail(f"unknown layer name '{ref}' (a layer can only take the model input or an earlier named layer)")
            L["in0" if r == 0 else "in1"] = t
        if L["name"]:
            if L["name"] in names or L["name"] == "input":
                fail(f"layer name '{L['name']}' is already used")
            names[L["name"]] = len(layers)
        _infer(L, inp, layers, fail)
        layers.append(L)
    if inp is None or not layers:
        raise ModelTextError("no 'input CxHxW' line or no layers")
    last = layers[-1]
    if not (last["kind"] == "dense" and ((last["act"] == "sigmoid" and last["units"] == 1) or
                                         (last["act"] == "softmax" and last["units"] >= 2))):
        raise ModelTextError("the last layer must be 'dense 1 sigmoid' or 'dense K softmax'")
    return inp, layers


def _shape(inp, layers, t):
    if t == 0:
        return tuple(inp), False
    return layers[t - 1]["out_shape"], layers[t - 1]["flat"]


def _infer(L, inp, layers, fail):
    (c, h, w), flat = _shape(inp, layers, L["in0"])
    L["in_shape"] = (c, h, w)
    k = L["kind"]
    if k == "add":
        other, _ = _shape(inp, layers, L["in1"])
        if other != (c, h, w):
            fail(f"add: shapes differ: {c}x{h}x{w} vs {'x'.join(map(str, other))}")
    if k in ("conv", "maxpool", "avgpool", "globalavgpool", "flatten") and flat:
        fail(f"{k} needs a 4-D input, but its input is flat")
    if k == "dense" and not flat:
        fail("dense after a 4-D tensor needs a flatten or globalavgpool first")
    if k == "conv":
        (kh, kw), s, pad = L["k"], L["stride"], L["pad"]
        if pad == "same":
            oh, ow = -(-h // s), -(-w // s)
            ph, pw = max((oh - 1) * s + kh - h, 0), max((ow - 1) * s + kw - w, 0)
            L["pad4"] = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # F.pad order: left, right, top, bottom
        elif pad == "valid":
            oh, ow = (h - kh) // s + 1, (w - kw) // s + 1
        else:
            oh, ow = (h + 2 * pad - kh) // s + 1, (w + 2 * pad - kw) // s + 1
        L["out_shape"], L["flat"] = (L["filters"], oh, ow), False
    elif k in ("maxpool", "avgpool"):
        (kh, kw), (sh, sw) = L["k"], L["s"]
        L["out_shape"], L["flat"] = (c, (h - kh) // sh + 1, (w - kw) // sw + 1), False
    elif k == "globalavgpool":
        L["out_shape"], L["flat"] = (c, 1, 1), True
    elif k == "flatten":
        L["out_shape"], L["flat"] = (c * h * w, 1, 1), True
    elif k == "dense":
        L["out_shape"], L["flat"] = (L["units"], 1, 1), True
    else:  # add, standardize, batchnorm, dropout, activation: shape-preserving
        L["out_shape"], L["flat"] = (c, h, w), flat
    if min(L["out_shape"]) <= 0:
        fail("layer output would be empty")


# ---- modules: one per layer line; conv/dense/batchnorm subclass PyTorch's so state_dict names stay ----

class Conv(nn.Conv2d):
    def __init__(self, L):
        (kh, kw), pad = L["k"], L["pad"]
        super().__init__(L["in_shape"][0], L["filters"], (kh, kw), stride=L["stride"],
                         padding=pad if isinstance(pad, int) else 0, bias=L.get("bias", True))
        self.pad4 = L.get("pad4")  # Keras 'same': asymmetric, applied with F.pad
        self.act = L["act"]

    def forward(self, x):
        if self.pad4 is not None and any(self.pad4):
            x = F.pad(x, self.pad4)
        return super().forward(x)

    def extra_repr(self):
        return super().extra_repr() + (f", same_pad={self.pad4}" if self.pad4 else "") + f", act={self.act}"


class Dense(nn.Linear):
    def __init__(self, L):
        super().__init__(L["in_shape"][0], L["units"])
        self.act = L["act"]

    def extra_repr(self):
        return super().extra_repr() + f", act={self.act}"


class BatchNorm2d(nn.BatchNorm2d):
    def __init__(self, L):
        super().__init__(L["in_shape"][0], eps=L["eps"], momentum=L["momentum"])
        self.act = L["act"]


class BatchNorm1d(nn.BatchNorm1d):
    def __init__(self, L):
        super().__init__(L["in_shape"][0], eps=L["eps"], momentum=L["momentum"])
        self.act = L["act"]


class Standardize(nn.Module):
    """Per sample: (x - mean) / max(std, eps), population std over all values of the sample."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        dims = tuple(range(1, x.dim()))
        mu = x.mean(dim=dims, keepdim=True)
        var = ((x - mu) ** 2).mean(dim=dims, keepdim=True)
        # max(sqrt(var), eps) = sqrt(max(var, eps^2)), whose gradient stays finite at var = 0
        return (x - mu) / torch.sqrt(torch.clamp(var, min=self.eps * self.eps))

    def extra_repr(self):
        return f"eps={self.eps}"


class Act(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.act = act

    def forward(self, x):
        return x

    def extra_repr(self):
        return f"act={self.act}"


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class Add(nn.Module):
    def __init__(self, L):
        super().__init__()
        self.act = L["act"]

    def forward(self, a, b):
        return a + b

    def extra_repr(self):
        return f"act={self.act}"


def _module(L):
    k = L["kind"]
    if k == "conv":
        return Conv(L)
    if k == "dense":
        return Dense(L)
    if k == "batchnorm":
        return BatchNorm1d(L) if L["flat"] else BatchNorm2d(L)
    if k == "maxpool":
        return nn.MaxPool2d(L["k"], stride=L["s"])
    if k == "avgpool":
        return nn.AvgPool2d(L["k"], stride=L["s"])
    if k == "globalavgpool":
        return GlobalAvgPool()
    if k == "flatten":
        return nn.Flatten()
    if k == "dropout":
        return nn.Dropout(L["rate"])
    if k == "standardize":
        return Standardize(L["eps"])
    if k == "add":
        return Add(L)
    if k == "act":
        return Act(L["act"])
    raise ValueError(k)


class XrayNet(nn.Module):
    """The model of an xray-dp description. layers[i] is layer line i; forward() returns logits."""

    def __init__(self, text):
        super().__init__()
        self.text = text
        self.input_shape, spec = parse(text)
        self.spec = spec
        self.layers = nn.ModuleList(_module(L) for L in spec)
        self.nout = spec[-1]["units"]

    def forward(self, x):
        t = [x]  # t[0] model input, t[i + 1] output of layer i
        last = len(self.spec) - 1
        for i, (L, mod) in enumerate(zip(self.spec, self.layers)):
            if L["kind"] == "add":
                y = mod(t[L["in0"]], t[L["in1"]])
            else:
                y = mod(t[L["in0"]])
            if i != last:  # the last layer's activation is fused into the loss: logits out
                y = activation(L["act"], y)
            t.append(y)
        return t[-1]

    def probabilities(self, x):
        z = self.forward(x)
        return torch.sigmoid(z) if self.nout == 1 else torch.softmax(z, dim=1)

    def param_index(self):
        """[(state_dict key, checkpoint dataset path)] for every tensor."""
        out = []
        for i, mod in enumerate(self.layers):
            for n in ("weight", "bias", "running_mean", "running_var"):
                if getattr(mod, n, None) is not None and isinstance(getattr(mod, n), torch.Tensor):
                    out.append((f"layers.{i}.{n}", f"{i}/{n}"))
        return out


def _text(attr):
    return attr.decode() if isinstance(attr, bytes) else str(attr)


def load_weights(model, f, group="params"):
    """Copies /<group>/<i>/<name> of an open h5py file into the model (shapes checked)."""
    with torch.no_grad():
        sd = model.state_dict()
        for key, path in model.param_index():
            ds = f"{group}/{path}"
            if ds not in f:
                raise KeyError(f"{f.filename}: missing dataset /{ds}")
            a = np.asarray(f[ds], dtype=np.float32)
            if tuple(a.shape) != tuple(sd[key].shape):
                raise ValueError(f"{f.filename}: /{ds} has shape {a.shape}, the model needs {tuple(sd[key].shape)}")
            sd[key].copy_(torch.from_numpy(a))


def _open(path):
    try:  # like xray-dp, without HDF5 file locks (cluster filesystems refuse them); h5py >= 3.5
        return h5py.File(path, "r", locking=False)
    except TypeError:
        return h5py.File(path, "r")


def load(path, ema=False, dtype=torch.float32):
    """xray-dp checkpoint (or fixture) -> XrayNet in eval mode with its weights. ema=True: the weight EMA
    kept in a last.h5 (/optim/ema) instead of /params."""
    with _open(path) as f:
        if "model" not in f.attrs:
            raise ValueError(f"{path}: no 'model' attribute: not an xray-dp checkpoint")
        model = XrayNet(_text(f.attrs["model"]))
        load_weights(model, f, "optim/ema" if ema else "params")
    return model.to(dtype).eval()


# ---- images, exactly as xray-dp's pack/predict see them (src/image.c) ----

def _axis_weights(sn, dn):
    rows = []
    for i in range(dn):
        idx, w = [], []
        if sn > dn:
            lo, hi = i * sn / dn, (i + 1) * sn / dn
            s = math.floor(lo)
            while s < sn and s < hi:
                ov = min(hi, s + 1.0) - max(lo, float(s))
                if ov > 1e-12:
                    idx.append(s)
                    w.append(np.float32(ov))
                s += 1
        elif sn == dn:
            idx, w = [i], [np.float32(1)]
        else:
            x = min(max((i + 0.5) * sn / dn - 0.5, 0.0), sn - 1.0)
            s0 = math.floor(x)
            f = x - s0
            idx, w = [s0], [np.float32(1 - f)]
            if f > 0 and s0 + 1 < sn:
                idx.append(s0 + 1)
                w.append(np.float32(f))
        tot = sum(float(v) for v in w)
        rows.append((idx, [np.float32(float(v) / tot) for v in w]))
    return rows


def resize_gray(src, dw, dh):
    """uint8 [sh, sw] -> uint8 [dh, dw], the same float32 operations in the same order as the C code."""
    src = src.astype(np.float32)
    sh, sw = src.shape
    tmp = np.zeros((sh, dw), np.float32)
    for x, (idx, w) in enumerate(_axis_weights(sw, dw)):
        acc = np.zeros(sh, np.float32)
        for s, wk in zip(idx, w):
            acc = acc + wk * src[:, s]
        tmp[:, x] = acc
    out = np.zeros((dh, dw), np.uint8)
    for y, (idx, w) in enumerate(_axis_weights(sh, dh)):
        acc = np.zeros(dw, np.float32)
        for s, wk in zip(idx, w):
            acc = acc + wk * tmp[s]
        out[y] = np.where(acc <= 0, 0, np.where(acc >= 255, 255, np.floor(acc + np.float32(0.5)))).astype(np.uint8)
    return out


def load_image(path, height, width):
    """Image file -> uint8 [height, width] grayscale, as `xray-dp pack`/`predict` (PIL decodes)."""
    from PIL import Image
    im = Image.open(path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = (np.asarray(im, dtype=np.uint32) >> 8).astype(np.uint8)  # stb_image: 16-bit -> high byte
    elif im.mode in ("L", "LA"):
        a = np.asarray(im)[..., 0] if im.mode == "LA" else np.asarray(im)
    elif im.mode == "1":
        a = np.asarray(im.convert("L"))
    else:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint32)
        a = ((299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2] + 500) // 1000).astype(np.uint8)
    return resize_gray(a, width, height)


def to_input(images_u8):
    """uint8 [B, H, W] (or [B, C, H, W]) -> float32 tensor [B, C, H, W] = pixels / 255, the model's input."""
    a = np.asarray(images_u8)
    if a.ndim == 3:
        a = a[:, None]
    return torch.from_numpy(a.astype(np.float32) * np.float32(1.0 / 255.0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Exit status 0 on success; 1 on an error or a --check mismatch.")
    ap.add_argument("ckpt")
    ap.add_argument("--ema", action="store_true", help="load /optim/ema (last.h5 of an --ema run) instead of /params")
    ap.add_argument("--check", nargs="+", metavar="IMAGE", help="print each image's probability")
    ap.add_argument("--xray-dp", metavar="BIN", help="with --check: also run BIN predict and compare")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest accepted |p_torch - p_xray-dp| (1e-4)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    try:
        model = load(a.ckpt, ema=a.ema)
    except (OSError, ValueError, KeyError) as e:
        print(f"to_torch.py: {e}", file=sys.stderr)
        return 1
    if not a.check:
        print(model)
        n = sum(p.numel() for p in model.parameters())
        print(f"input {'x'.join(map(str, model.input_shape))}, {n} parameters, {model.nout} output(s)")
        return 0
    c, h, w = model.input_shape
    if c != 1:
        print(f"to_torch.py: --check needs a 1-channel model, this one takes {c}", file=sys.stderr)
        return 1
    imgs = np.stack([load_image(p, h, w) for p in a.check])
    with torch.no_grad():
        p = model.probabilities(to_input(imgs)).numpy()
    prob = p[:, 0] if model.nout == 1 else p
    ref = None
    if a.xray_dp and model.nout != 1:
        print("to_torch.py: --xray-dp compares one-output (sigmoid) models only", file=sys.stderr)
        return 1
    if a.xray_dp:
        out = subprocess.run([a.xray_dp, "predict", "--ckpt", a.ckpt] + a.check, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"to_torch.py: {a.xray_dp} predict failed: {out.stderr.strip()}", file=sys.stderr)
            return 1
        got = dict(line.split("\t")[:2] for line in out.stdout.strip().split("\n") if line)
        ref = [float(got[p]) if p in got else float("nan") for p in a.check]
    worst = 0.0
    for i, path in enumerate(a.check):
        if model.nout == 1:
            line = f"{path}\t{prob[i]:.9g}"
            if ref is not None:
                d = abs(float(prob[i]) - ref[i])
                worst = max(worst, d) if d == d else float("inf")  # nan: xray-dp could not read the image
                line += f"\txray-dp {ref[i]:.9g}\t|dp| {d:.2e}"
        else:
            line = f"{path}\t" + " ".join(f"{v:.9g}" for v in prob[i])
        print(line)
    if ref is not None:
        print(f"max |p_torch - p_xray-dp| = {worst:.3g} (tolerance {a.tol:g})")
        return 0 if worst <= a.tol else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
