"""Benchmark: cnncalc training vs PyTorch CPU on real MNIST (LeNet-5), alternating in one process.

For each epoch, cnncalc trains one epoch, then PyTorch trains one epoch of the same model with
the same batch size, optimizer, schedule, init and preprocessing; epoch wall time covers shuffle,
batch gather, forward, backward and the update (test evaluation is timed apart); the PyTorch
side is a plain LeNet-5 training loop with the same data pipeline.

  python bench/bench_train.py --recipe --epochs 10            # specs/lenet5_mnist.yaml (>= 99%)
  python bench/bench_train.py --recipe --epochs 1             # the same recipe squeezed into 1 epoch
  python bench/bench_train.py --opt momentum --lr 0.05 --epochs 3 --batch 64   # plain SGD+momentum
  python bench/bench_train.py ... --no-torch --json out.json --fig out.png

--recipe takes every training setting from specs/lenet5_mnist.yaml (nesterov 0.9, lr 0.05, 200
warm-up steps then cosine to 0 over the run, per step, weight decay 5e-4, He init, Xavier on the
classifier, per-channel standardisation); the cosine length follows --epochs. PyTorch gets the
identical per-step learning rates (computed by cnncalc's schedule) and the same init
distributions. Quote medians: these machines are shared and noisy.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def torch_lenet(init: str, last_init: str | None, seed: int):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = F.relu(self.fc1(x.flatten(1)))
            return self.fc3(F.relu(self.fc2(x)))

    torch.manual_seed(seed)
    m = LeNet5()
    if init != "torch":
        with torch.no_grad():
            for name, mod in m.named_children():
                scheme = last_init if (name == "fc3" and last_init) else init
                fan_in = mod.weight[0].numel()
                std = {"he": math.sqrt(2.0 / fan_in), "xavier": 1.0 / math.sqrt(fan_in)}[scheme]
                mod.weight.normal_(0.0, std)
                mod.bias.zero_()
    return m


def torch_optimizer(model, s):
    import torch

    p = model.parameters()
    h = s.optimizer_hyper()   # every hyperparameter, the optimizer's defaults filled in
    if s.optimizer in ("momentum", "nesterov", "sgd"):
        return torch.optim.SGD(p, lr=h["lr"], weight_decay=h["weight_decay"],
                               momentum=h.get("momentum", 0.0),
                               nesterov=s.optimizer == "nesterov")
    if s.optimizer == "adam":
        return torch.optim.Adam(p, lr=h["lr"], betas=tuple(h["betas"]),
                                weight_decay=h["weight_decay"], eps=h["eps"])
    raise SystemExit(f"bench: no PyTorch twin for optimizer {s.optimizer}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", default=os.environ.get("CNNCALC_MNIST_DIR"),
                    help="folder of MNIST's IDX .gz files (default: $CNNCALC_MNIST_DIR)")
    ap.add_argument("--recipe", action="store_true", help="settings of specs/lenet5_mnist.yaml")
    ap.add_argument("--opt", default="momentum")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--deterministic", action="store_true", help="cnncalc serial kernels")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--fig", type=Path, help="accuracy/time figure (matplotlib)")
    args = ap.parse_args()
    if not args.mnist:
        ap.error("no MNIST folder: pass --mnist DIR or set CNNCALC_MNIST_DIR")

    import cnncalc
    from cnncalc.train import data
    from cnncalc.train import trainer as T
    from cnncalc.train.settings import resolve

    spec = ROOT / "specs" / ("lenet5_mnist.yaml" if args.recipe else "lenet5.yaml")
    g = cnncalc.load(spec)
    base = dict(g.train) if args.recipe else {"optimizer": args.opt, "lr": args.lr,
                                                "init": "he"}
    if not args.recipe and args.opt in ("momentum", "nesterov"):
        base["momentum"] = args.momentum
    cli = {"epochs": args.epochs, "batch_size": args.batch, "seed": args.seed,
           "data": f"mnist:{args.mnist}"}
    if not args.recipe:
        cli["preprocess"] = "channel_mean_std"
    if args.deterministic:
        cli["parallel"] = False
    s = resolve(("spec", base), ("bench", cli))
    ds = data.load(s.data)
    run = T.build(g, s, dataset=ds)
    tr = run.trainer
    n = len(run.x_train)
    spe = math.ceil(n / s.batch_size)
    sched = tr.schedule_for(spe)

    torch_state = None
    if not args.no_torch:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(args.threads)
        last_init = next((nd.init for nd in g.nodes if nd.init), None)
        model = torch_lenet(s.init if isinstance(s.init, str) else "he", last_init, args.seed)
        opt = torch_optimizer(model, s)
        xtr = torch.from_numpy(np.ascontiguousarray((ds.x_train - 0.1307) / 0.3081,
                                                    dtype=np.float32))
        xte = torch.from_numpy(np.ascontiguousarray((ds.x_test - 0.1307) / 0.3081,
                                                    dtype=np.float32))
        ytr, yte = torch.from_numpy(ds.y_train), torch.from_numpy(ds.y_test)
        gen = torch.Generator().manual_seed(args.seed)
        torch_state = {"step": 0}

        def torch_epoch(epoch_index: int) -> dict:
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen)
            loss_sum = 0.0
            for i in range(0, n, s.batch_size):
                idx = perm[i:i + s.batch_size]
                t = torch_state["step"] if s.schedule_per == "step" else epoch_index
                for pg in opt.param_groups:
                    pg["lr"] = sched(t)
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
                loss.backward()
                opt.step()
                loss_sum += loss.detach()
                torch_state["step"] += 1
            train_s = time.perf_counter() - t0
            with torch.no_grad():
                model.eval()
                correct = sum((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
                              for i in range(0, len(yte), 1000))
                model.train()
            return {"train_s": train_s, "loss": float(loss_sum) / spe,
                    "test_acc": correct / len(yte)}

    rows = []
    print(f"bench: {spec.name}, {s.optimizer} lr {s.base_lr():g}, {s.schedule} "
          f"(warmup {s.warmup}), batch {s.batch_size}, {s.epochs} epochs, "
          f"{'serial' if s.parallel is False else 'parallel'} kernels", flush=True)
    t_first = time.perf_counter()
    for e in range(1, s.epochs + 1):
        tr.fit(run.x_train, run.y_train, run.x_test, run.y_test, epochs=e)
        ours = tr.history.epochs[-1]
        row = {"epoch": e, "ours_s": ours["seconds"], "ours_loss": ours["loss"],
               "ours_test_acc": ours["test_acc"]}
        if e == 1:
            row["ours_first_epoch_wall_s"] = time.perf_counter() - t_first  # incl. compile
        if torch_state is not None:
            t = torch_epoch(e - 1)
            row.update(torch_s=t["train_s"], torch_loss=t["loss"], torch_test_acc=t["test_acc"])
        rows.append(row)
        line = (f"epoch {e}: cnncalc {row['ours_s']:.2f} s ({n / row['ours_s']:,.0f} img/s) "
                f"test {100 * row['ours_test_acc']:.2f}%")
        if "torch_s" in row:
            line += (f" | torch {row['torch_s']:.2f} s ({n / row['torch_s']:,.0f} img/s) test "
                     f"{100 * row['torch_test_acc']:.2f}% | ratio {row['torch_s'] / row['ours_s']:.2f}x")
        print(line, flush=True)

    # the first epoch includes compiling (or loading cached) kernels: leave it out of the median
    steady = rows[1:] or rows
    summary = {"spec": spec.name, "settings": s.to_dict(), "epochs": rows,
               "ours_median_s": statistics.median(r["ours_s"] for r in steady),
               "ours_final_test_acc": rows[-1]["ours_test_acc"]}
    if torch_state is not None:
        import torch

        summary.update(torch=torch.__version__, threads=torch.get_num_threads(),
                       torch_median_s=statistics.median(r["torch_s"] for r in steady),
                       torch_final_test_acc=rows[-1]["torch_test_acc"])
        summary["speedup"] = summary["torch_median_s"] / summary["ours_median_s"]
    print(f"median epoch: cnncalc {summary['ours_median_s']:.2f} s"
          + (f", torch {summary['torch_median_s']:.2f} s (torch/cnncalc = "
             f"{summary['speedup']:.2f}x)" if torch_state is not None else ""))
    print(f"final test accuracy: cnncalc {100 * summary['ours_final_test_acc']:.2f}%"
          + (f", torch {100 * summary['torch_final_test_acc']:.2f}%"
             if torch_state is not None else ""), flush=True)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    if args.fig:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        ep = [r["epoch"] for r in rows]
        a1.plot(ep, [100 * r["ours_test_acc"] for r in rows], "o-", label="cnncalc")
        a2.plot(ep, [r["ours_s"] for r in rows], "o-", label="cnncalc")
        if torch_state is not None:
            a1.plot(ep, [100 * r["torch_test_acc"] for r in rows], "s-", label="PyTorch CPU")
            a2.plot(ep, [r["torch_s"] for r in rows], "s-", label="PyTorch CPU")
        a1.axhline(99.0, color="0.6", ls="--", lw=0.8)
        a1.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"LeNet-5 MNIST, {spec.name}")
        a2.set(xlabel="epoch", ylabel="epoch wall time (s)", ylim=(0, None),
               title=f"batch {s.batch_size}, {s.optimizer}")
        for a in (a1, a2):
            a.grid(alpha=0.3)
            a.legend()
        fig.tight_layout()
        fig.savefig(args.fig, dpi=110)


if __name__ == "__main__":
    main()
