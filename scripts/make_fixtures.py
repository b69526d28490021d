#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures that tests/test_torch_ref.c compares xray-dp against.

For each preset (dropout rate forced to 0 so the comparison is deterministic), at a small input size:
a fixed input batch, the initial weights, the logits and loss, every gradient, and the weights (and
batchnorm running statistics) after 1 and 3 Adam steps on that batch; for keras-seed also 1 and 2 steps
of SGD (momentum 0.9), SGD (Nesterov, weight decay 1e-2), RMSProp, AdaGrad and Adam with weight decay. The reference runs in float64, so the
fixtures hold the exact answer and the C test measures xray-dp's float32 error against it.

Each fixture is an HDF5 file laid out like an xray-dp checkpoint (root attrs format, model, ...;
/params/<i>/...), so the C test loads the initial state with the product's own checkpoint reader.

Run with Debian's python3 (python3-torch, python3-h5py):  /usr/bin/python3 scripts/make_fixtures.py
"""
import os, sys
import h5py, numpy as np, torch, torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")

PRESETS = {
    "keras-seed": (32, """conv 16 3x3 relu
maxpool 2x2
conv 32 3x3 relu
maxpool 2x2
flatten
dense 64 relu
dropout 0
dense 1 sigmoid
"""),
    "tripathi5": (96, """conv 16 3x3 relu
maxpool 2x2
conv 32 3x3 relu
maxpool 2x2
conv 64 3x3 relu
maxpool 2x2
conv 16 3x3 relu
maxpool 2x2
conv 64 3x3 relu
maxpool 2x2
flatten
dropout 0
dense 128 relu
dense 1 sigmoid
"""),
    "petre-bn": (16, """conv 32 3x3 relu pad=same
batchnorm
conv 32 3x3 relu pad=same
batchnorm
maxpool 2x2
dropout 0
conv 64 3x3 relu pad=same
batchnorm
conv 64 3x3 relu pad=same
batchnorm
maxpool 2x2
dropout 0
flatten
dense 64 relu
dropout 0
dense 1 sigmoid
"""),
    # not a preset: covers the remaining layers and activations, stride, rectangular kernels, softmax + CE
    "mixed": (20, """conv 6 3x3 leakyrelu stride=2 pad=same
avgpool 2x2
conv 8 2x3 elu pad=same
batchnorm
tanh
conv 5 1x1 sigmoid
globalavgpool
dense 7 relu
dense 3 softmax
"""),
}
BATCH = 4
ACTS = {"relu": nn.ReLU, "leakyrelu": lambda: nn.LeakyReLU(0.01), "elu": nn.ELU, "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh, "linear": nn.Identity}


def build(text, size):
    """Our model description -> (nn.Sequential, [(layer index, module with params)], loss kind)."""
    mods, owners = [], []
    c, h, w, flat = 1, size, size, False
    lines = [l.split("#")[0].split() for l in text.strip().splitlines()]
    lines = [l for l in lines if l]
    for i, t in enumerate(lines):
        kind, last = t[0], i == len(lines) - 1
        opts = dict(x.split("=") for x in t if "=" in x)
        pos = [x for x in t[1:] if "=" not in x]
        if kind == "conv":
            f = int(pos[0]); kh, kw = map(int, pos[1].split("x"))
            s = int(opts.get("stride", 1)); same = opts.get("pad") == "same"
            if same:
                oh, ow = -(-h // s), -(-w // s)
                ph, pw = max((oh - 1) * s + kh - h, 0), max((ow - 1) * s + kw - w, 0)
                pad = nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
                mods.append(pad)
                h, w = h + ph, w + pw
            m = nn.Conv2d(c, f, (kh, kw), stride=s)
            mods.append(m); owners.append((i, m))
            c, h, w = f, (h - kh) // s + 1, (w - kw) // s + 1
            act = pos[2] if len(pos) > 2 else "linear"
            mods.append(ACTS[act]())
        elif kind in ("maxpool", "avgpool"):
            kh, kw = map(int, pos[0].split("x"))
            mods.append((nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d)((kh, kw)))
            h, w = (h - kh) // kh + 1, (w - kw) // kw + 1
        elif kind == "globalavgpool":
            mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            h = w = 1; flat = True
        elif kind == "batchnorm":
            m = nn.BatchNorm1d(c) if flat else nn.BatchNorm2d(c)
            mods.append(m); owners.append((i, m))
        elif kind == "dropout":
            assert float(pos[0]) == 0
            mods.append(nn.Identity())
        elif kind == "flatten":
            mods.append(nn.Flatten()); c, h, w, flat = c * h * w, 1, 1, True
        elif kind == "dense":
            u = int(pos[0]); m = nn.Linear(c, u)
            mods.append(m); owners.append((i, m)); c = u
            act = pos[1] if len(pos) > 1 else "linear"
            if not last:
                mods.append(ACTS[act]())
            else:
                loss = "bce" if act == "sigmoid" else "ce"
        elif kind in ACTS:
            mods.append(ACTS[kind]())
        else:
            raise ValueError(kind)
    return nn.Sequential(*mods), owners, loss


def tensors(owners):
    out = []
    for i, m in owners:
        out += [(f"{i}/weight", m.weight), (f"{i}/bias", m.bias)]
    return out


def buffers(owners):
    return [(f"{i}/{n}", getattr(m, n)) for i, m in owners if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for n in ("running_mean", "running_var")]


def save_state(f, group, owners, what="params"):
    for name, t in tensors(owners):
        f.create_dataset(f"{group}/{name}", data=(t.grad if what == "grad" else t).detach().numpy().astype(np.float32))
    if what != "grad":
        for name, t in buffers(owners):
            f.create_dataset(f"{group}/{name}", data=t.detach().numpy().astype(np.float32))


def run(name, size, text):
    torch.manual_seed(1234)
    model, owners, loss_kind = build(text, size)
    model = model.double().train()
    # weights: PyTorch's own init, rounded to float32 so both sides start from identical values
    with torch.no_grad():
        for _, t in tensors(owners):
            t.copy_(t.float().double())
        for i, m in owners:  # non-trivial batchnorm affine parameters
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_((1 + 0.1 * torch.randn_like(m.weight)).float().double())
                m.bias.copy_((0.1 * torch.randn_like(m.bias)).float().double())
    g = torch.Generator().manual_seed(99)
    x = torch.rand(BATCH, 1, size, size, generator=g).float().double()
    nout = 1 if loss_kind == "bce" else int(text.strip().splitlines()[-1].split()[1])
    y = torch.randint(0, 2 if nout == 1 else nout, (BATCH,), generator=g)
    y[0], y[1] = 0, 1
    lossf = (lambda z: nn.functional.binary_cross_entropy_with_logits(z.squeeze(1), y.double())) if loss_kind == "bce" \
        else (lambda z: nn.functional.cross_entropy(z, y))
    path = os.path.join(OUT, f"torch_{name}.h5")
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "xray-dp-checkpoint"; f.attrs["version"] = 1
        f.attrs["model"] = f"input 1x{size}x{size}\n" + text
        f.attrs["channels"] = 1; f.attrs["height"] = size; f.attrs["width"] = size
        f.attrs["generator"] = f"scripts/make_fixtures.py, torch {torch.__version__}, float64 reference"
        f.create_dataset("x", data=x.numpy().astype(np.float32))
        f.create_dataset("y", data=y.numpy().astype(np.uint8))
        save_state(f, "params", owners)
        state0 = {k: v.clone() for k, v in model.state_dict().items()}
        z = model(x); loss = lossf(z); loss.backward()
        f.create_dataset("logits", data=z.detach().numpy().astype(np.float32).reshape(BATCH, -1))
        f.attrs["loss"] = float(loss)
        save_state(f, "grads", owners, "grad")
        # name -> (constructor, steps recorded); tests/test_torch_ref.c mirrors these settings
        optims = {"adam": (lambda p: torch.optim.Adam(p, lr=1e-3), (1, 3))}
        if name == "keras-seed":
            optims["sgd"] = (lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9), (1, 2))
            optims["sgdn"] = (lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-2), (1, 2))
            optims["rmsprop"] = (lambda p: torch.optim.RMSprop(p, lr=1e-3), (1, 2))
            optims["adagrad"] = (lambda p: torch.optim.Adagrad(p, lr=1e-2), (1, 2))
            optims["adamwd"] = (lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-2), (1, 2))
        for oname, (make, record) in optims.items():
            model.load_state_dict(state0)
            opt = make(model.parameters())
            for step in range(1, max(record) + 1):
                opt.zero_grad(); lossf(model(x)).backward(); opt.step()
                if step in record:
                    save_state(f, f"{oname}{step}", owners)
    print(f"wrote {path} ({os.path.getsize(path) // 1024} KiB)")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, (size, text) in PRESETS.items():
        if len(sys.argv) < 2 or name in sys.argv[1:]:
            run(name, size, text)
