#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures that tests/test_torch_ref.c compares xray-dp against.

For each preset (dropout rate forced to 0 so the comparison is deterministic), at a small input size:
a fixed input batch, the initial weights, the logits and loss, every gradient, and the weights (and
batchnorm running statistics) after 1 and 3 Adam steps on that batch; for keras-seed also 1 and 2 steps
of SGD (momentum 0.9), SGD (Nesterov, weight decay 1e-2), RMSProp, AdaGrad and Adam with weight decay.
The layer graphs ("resnet": the resnet-s preset's structure at width 2; "graph": the rest of the graph
language) record AdamW instead (lr 1e-3, weight decay 1e-2; groups adamw1, adamw3) and two weight EMAs
(decay 0.998 and 0.2; groups ema_slow1/3 and ema_fast1/3, batchnorm statistics included). The loss is the
plain mean binary (or categorical) cross-entropy, no class weights. The reference runs in float64, so the
fixtures hold the exact answer and the C test measures xray-dp's float32 error against it.

Models are built by scripts/to_torch.py (the loader of real checkpoints), so the fixtures check it too.
Each fixture is an HDF5 file laid out like an xray-dp checkpoint (root attrs format, model, ...;
/params/<i>/...), so the C test loads the initial state with the product's own checkpoint reader.

Run with Debian's python3 (python3-torch, python3-h5py), about 5 s on one core:
    /usr/bin/python3 scripts/make_fixtures.py [--out DIR] [NAME...]
(the committed fixtures regenerate bit for bit, except rounding-level differences in gradients that are
zero in exact arithmetic: compare with --out /tmp/fx before committing a change).
"""
import os, sys
import h5py, numpy as np, torch, torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import to_torch  # noqa: E402  (scripts/to_torch.py: builds the PyTorch module of a model description)

OUT = os.path.join(HERE, "..", "tests", "fixtures")


def resnet_text(w, dropout="0"):
    """src/model.c resnet_body(w): the resnet-s (w = 16) / resnet-m (w = 24) presets at width w."""
    t = f"standardize\nconv {w} 3x3 pad=1\nbatchnorm relu\nmaxpool 2x2 name=stem\n"
    prev = "stem"
    for b, name in enumerate(("block1", "block2", "block3")):
        c = w << (b + 1)
        t += f"conv {c} 3x3 stride=2 pad=1\nbatchnorm relu\nconv {c} 3x3 pad=1\nbatchnorm name={name}_main\n"
        t += f"conv {c} 1x1 stride=2 in={prev}\nbatchnorm\nadd {name}_main relu name={name}\n"
        prev = name
    return t + f"globalavgpool\ndropout {dropout}\ndense 1 sigmoid\n"


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
    # the resnet-s preset's exact structure at width 2 (4, 8, 16 channels in the blocks): standardize,
    # pad=1, stride 2, batchnorm relu, in=, 1x1 skip convs, add relu, globalavgpool, dropout
    "resnet": (32, resnet_text(2)),
    # not a preset: the rest of the graph language. standardize inside the network (its backward runs),
    # a tensor read by a conv and an add (identity skip), in=input (the model input read twice), add
    # without and with a non-relu activation, overlapping max pooling (3x3 stride 2), a strided avgpool,
    # pad=1 with a rectangular kernel, batchnorm with fused activations on 4-D and on flat tensors
    "graph": (12, """conv 4 3x3 pad=1 name=c1
standardize eps=1e-4
batchnorm tanh name=a
conv 4 3x3 elu pad=same
add a leakyrelu name=r1
conv 4 1x1 in=input
add r1 name=r2
maxpool 3x3 stride=2
conv 3 2x3 pad=1
batchnorm elu
avgpool 2x2 stride=1
flatten
batchnorm sigmoid
dense 6 tanh
dropout 0
dense 1 sigmoid
"""),
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
# the graph fixtures' training recipe: AdamW with decoupled decay, and weight EMAs (tests/test_torch_ref.c
# mirrors these). EMA decay d_s = min(decay, (1 + s) / (10 + s)) after optimizer step s: with 0.998 every
# recorded step is in the warm-up ((1+s)/(10+s) = 0.18, 0.25, 0.31), with 0.2 step 1 is warm-up and steps
# 2 and 3 are capped at 0.2, so both branches of the min are covered.
GRAPH_FIXTURES = ("resnet", "graph")
ADAMW = dict(lr=1e-3, weight_decay=1e-2)
EMAS = {"ema_slow": 0.998, "ema_fast": 0.2}


def build(text, size):
    """Our model description -> (module, [(layer index, module with params)], loss kind). The module is
    scripts/to_torch.py's, the loader of real checkpoints, so every fixture also checks that loader."""
    model = to_torch.XrayNet(f"input 1x{size}x{size}\n" + text)
    owners = [(i, m) for i, m in enumerate(model.layers)
              if isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm))]
    return model, owners, "bce" if model.nout == 1 else "ce"


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
    with h5py.File(path, "w", libver="latest") as f:  # compact groups: a third of the default size
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
        if name in GRAPH_FIXTURES:
            optims = {"adamw": (lambda p: torch.optim.AdamW(p, **ADAMW), (1, 3))}
        if name == "keras-seed":
            optims["sgd"] = (lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9), (1, 2))
            optims["sgdn"] = (lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-2), (1, 2))
            optims["rmsprop"] = (lambda p: torch.optim.RMSprop(p, lr=1e-3), (1, 2))
            optims["adagrad"] = (lambda p: torch.optim.Adagrad(p, lr=1e-2), (1, 2))
            optims["adamwd"] = (lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-2), (1, 2))
        for oname, (make, record) in optims.items():
            model.load_state_dict(state0)
            opt = make(model.parameters())
            emas = {g: (decay, [t.detach().clone() for _, t in tensors(owners) + buffers(owners)])
                    for g, decay in EMAS.items()} if oname == "adamw" else {}
            for step in range(1, max(record) + 1):
                opt.zero_grad(); lossf(model(x)).backward(); opt.step()
                for g, (decay, ema) in emas.items():
                    d = min(decay, (1 + step) / (10 + step))
                    with torch.no_grad():
                        for e, (_, t) in zip(ema, tensors(owners) + buffers(owners)):
                            e.mul_(d).add_(t.detach() * (1 - d))
                if step in record:
                    save_state(f, f"{oname}{step}", owners)
                    for g, (decay, ema) in emas.items():
                        for e, (tname, _) in zip(ema, tensors(owners) + buffers(owners)):
                            f.create_dataset(f"{g}{step}/{tname}", data=e.numpy().astype(np.float32))
                        f[f"{g}{step}"].attrs["decay"] = decay
    print(f"wrote {path} ({os.path.getsize(path) // 1024} KiB)")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--out"]:  # another directory, e.g. to compare a regeneration with the committed files
        OUT, args = args[1], args[2:]
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    for name, (size, text) in PRESETS.items():
        if not args or name in args:
            run(name, size, text)
