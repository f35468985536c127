"""The command line, ``python -m lib.diagnose``: see :func:`main` and ``--help``."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import torch
from torch import Tensor, nn

from lib import probes as _probes
from lib import seeds as _seeds
from lib._checks import default_loss
from lib.diagnose.advice import CHAPTERS
from lib.diagnose.rules import Diagnosis, _span
from lib.diagnose.run import ModelError, diagnose_model
from lib.probes._forward import default_output_loss, output_tensor

__all__ = ["main"]

_EPILOG = """\
examples:
  python -m lib.diagnose                          diagnose every built-in example
  python -m lib.diagnose --list                   list the built-in examples
  python -m lib.diagnose --example sigmoid_stack  per-layer table and diagnosis
  python -m lib.diagnose mypkg.models:build       your model, from an importable module
  python -m lib.diagnose path/to/file.py:build --input-shape 3,32,32
  python -m lib.diagnose lm.py:build --vocab 1000 --input-shape 64   token ids

TARGET is MODULE:FACTORY (or FILE.py:FACTORY). FACTORY() returns a
torch.nn.Module, or a tuple (model, x, y) with a batch to diagnose on;
--data MODULE:FUNCTION gives a batch (x, y) for a bare model. Otherwise the
input is random: N(0, 1) floats of shape (--batch, *--input-shape), or token
ids below --vocab; without --input-shape the shape is read from the model's
first layer. Targets are random labels, one class per output column (or per
token), or N(0, 1) targets for a single output column or --loss mse.

exit status: 0 diagnosis printed (1 with --fail-on-issue if a problem was
found), 2 bad arguments, or a target that cannot be imported, built or run.
"""


class _CliError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit status 2
        raise _CliError(message)


#: The most numbers a random batch may hold (--batch times the input shape):
#: 2**26 float32 entries are 256 MiB, far beyond what a one-pass diagnosis needs.
MAX_BATCH_NUMEL = 2**26
MAX_BATCH = 65536


def _shape(text: str) -> tuple[int, ...]:
    # "3,32,32" or "3x32x32"; every part a number ("3,x" and "3,,4" are refused)
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    shape = tuple(int(p) for p in parts) if all(p.isascii() and p.isdigit() for p in parts) else ()
    if not shape or any(s < 1 for s in shape):
        raise argparse.ArgumentTypeError(f"shape must be positive integers like 64 or 1,8,8; "
                                         f"got {text!r}")
    if math.prod(shape) > MAX_BATCH_NUMEL:
        raise argparse.ArgumentTypeError(f"shape must hold at most {MAX_BATCH_NUMEL} numbers "
                                         f"per example, got {text!r}")
    return shape


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _batch(text: str) -> int:
    v = _positive(text)
    if v > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"expected a batch size from 1 to {MAX_BATCH}, "
                                         f"got {text!r}")
    return v


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def _parser() -> argparse.ArgumentParser:
    from lib.diagnose.examples import examples

    p = _Parser(prog="python -m lib.diagnose", epilog=_EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Diagnose the gradient flow of a PyTorch model: one forward/backward "
                            "pass, a per-layer table, and a plain-language verdict with a fix.")
    p.add_argument("target", nargs="?", help="your model factory, MODULE:FACTORY or FILE.py:FACTORY")
    p.add_argument("--example", metavar="NAME", help="a built-in example: " + ", ".join(examples()))
    p.add_argument("--list", action="store_true", help="list the built-in examples and exit")
    p.add_argument("--data", metavar="MODULE:FUNCTION", help="a function returning a batch (x, y)")
    p.add_argument("--input-shape", type=_shape, metavar="SHAPE",
                   help="shape of one input example, e.g. 64 or 3,32,32 (random input)")
    p.add_argument("--vocab", type=_positive, metavar="N",
                   help="random integer token ids in [0, N) instead of float input")
    p.add_argument("--loss", default="auto", metavar="LOSS",
                   help="cross-entropy, mse, or MODULE:FUNCTION(output, y) (default: "
                        "cross-entropy for labels, mse for float targets)")
    p.add_argument("--batch", type=_batch, default=64, help="batch size (default 64)")
    p.add_argument("--seed", type=_seed, default=None,
                   help="seed for the factory and the random input (default: the book's, 0)")
    p.add_argument("--fail-on-issue", action="store_true",
                   help="exit with status 1 if a problem is found")
    return p


def _load(target: str, what: str) -> Callable[..., Any]:
    mod_name, sep, attr = target.rpartition(":")
    if not sep or not mod_name or not attr:
        raise _CliError(f"{what} must look like MODULE:NAME or FILE.py:NAME, got {target!r}")
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ beside the user's file
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise _CliError(f"cannot import {mod_name!r}: no such file")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise _CliError(f"cannot import {mod_name!r}: not a Python file")
            module = importlib.util.module_from_spec(spec)
            # as `python FILE.py` would: the file's folder on sys.path (its sibling
            # imports), and the module registered (dataclasses look it up by name)
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            sys.modules.setdefault(spec.name, module)
            _guard(f"cannot import {mod_name!r}", lambda: spec.loader.exec_module(module))
        else:
            module = _guard(f"cannot import module {mod_name!r}",
                            lambda: importlib.import_module(mod_name))
    finally:
        sys.dont_write_bytecode = before
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise _CliError(f"{mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise _CliError(f"{target} is not callable (it is a {type(obj).__name__})")
    return obj


def _guard(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except _CliError:
        raise
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - user code, SystemExit included
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        sep = " " if what.endswith("raised") else ": "
        raise _CliError(f"{what}{sep}{type(exc).__name__}{': ' + text if text else ''}") from None


def _build(factory: Callable[[], Any], what: str) -> tuple[nn.Module, Tensor | None, Tensor | None]:
    made = _guard(f"calling {what}() raised", factory)
    if isinstance(made, nn.Module):
        return made, None, None
    if isinstance(made, tuple) and len(made) == 3 and isinstance(made[0], nn.Module) \
            and isinstance(made[1], Tensor) and isinstance(made[2], Tensor):
        return made
    raise _CliError(f"{what}() must return a torch.nn.Module or a tuple (model, x, y) of a "
                    f"module and two tensors; it returned {type(made).__name__}")


def _infer_shape(model: nn.Module, vocab: int | None) -> tuple[tuple[int, ...], int | None, str]:
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            return (16,), vocab or m.num_embeddings, f"token ids below {vocab or m.num_embeddings}"
        if isinstance(m, nn.Linear):
            return (m.in_features,), vocab, "read from its first Linear layer"
        if isinstance(m, nn.modules.conv._ConvNd):
            k = len(m.kernel_size)
            return (m.in_channels,) + (32,) * k, vocab, f"read from its first Conv{k}d layer"
        if isinstance(m, nn.RNNBase):
            return (16, m.input_size), vocab, f"read from its first {type(m).__name__}"
    raise _CliError("cannot tell the input's shape from the model: give --input-shape "
                    "(and --vocab for token ids), or return (model, x, y) from the factory")


def _targets(out: Any, x: Tensor, loss: str, gen: torch.Generator) -> tuple[Tensor, str]:
    """Random targets shaped for the model's output (its logits, of a ModelOutput or dict)."""
    try:
        out = output_tensor(out)
    except TypeError:
        raise _CliError(f"cannot make random targets for an output of type "
                        f"{type(out).__name__}: return a tensor, a tuple that starts with "
                        f"one, or a 'logits' tensor (a Hugging Face ModelOutput), or give "
                        f"--data MODULE:FUNCTION that returns (x, y)") from None
    if not out.is_floating_point():
        raise _CliError(f"the model's output must be floating, got {out.dtype}")
    if loss != "mse" and out.dim() == 2 and out.shape[1] > 1:
        return torch.randint(0, out.shape[1], (out.shape[0],), generator=gen), \
            f"random labels over {out.shape[1]} classes"
    if loss != "mse" and out.dim() == 3 and not x.is_floating_point() and out.shape[2] > 1:
        return torch.randint(0, out.shape[2], out.shape[:2], generator=gen), \
            f"random token labels over {out.shape[2]} classes"
    return torch.randn(out.shape, generator=gen), "random N(0, 1) targets (mean squared error)"


def _loss(spec: str) -> tuple[Callable[[Tensor, Tensor], Tensor] | None, str]:
    if spec in ("auto", "cross-entropy", "ce"):
        return (None if spec == "auto" else default_output_loss), spec
    if spec == "mse":
        return (lambda out, y: default_loss(out, y.to(out.dtype))), spec
    if ":" in spec:
        fn = _load(spec, "--loss")
        return (lambda out, y: fn(out, y)), spec
    raise _CliError(f"--loss must be cross-entropy, mse or MODULE:FUNCTION; got {spec!r}")


def _diagnose(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Any) -> Diagnosis:
    if not _probes.layer_modules(model):
        raise _CliError("the model has no layer with parameters (Linear, Conv, ...) to probe")
    try:
        return diagnose_model(model, x, y, loss_fn)
    except ModelError as exc:
        raise _CliError(str(exc).splitlines()[0]) from None
    except (TypeError, ValueError) as exc:
        raise _CliError(str(exc).splitlines()[0]) from None


def _show(d: Diagnosis) -> None:
    print(d)
    if not d.healthy:
        title, url = CHAPTERS[d.primary]
        print(f"\nRead first: \"{title}\", {url}")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (see ``python -m lib.diagnose --help``).

    Every bad input (arguments, an unimportable target, a factory that raises,
    even ``SystemExit``, or returns the wrong thing, a forward pass or loss that
    fails) ends with one ``error:`` line on stderr and status 2. The global
    random state is left as it was.
    """
    try:
        if argv is not None and (isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence)
                                 or not all(isinstance(a, str) for a in argv)):
            raise _CliError(f"argv must be a list of strings (like sys.argv[1:]), got "
                            f"{type(argv).__name__} {argv!r}"[:200])
        with torch.random.fork_rng(devices=[]):
            return _run(_parser().parse_args(argv))
    except _CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from lib.diagnose.examples import examples

    seed = _seeds.base_seed() if args.seed is None else args.seed
    chosen = sum(bool(v) for v in (args.target, args.example, args.list))
    if chosen > 1:
        raise _CliError("give at most one of TARGET, --example and --list")
    # options that only shape the random batch built for a TARGET
    unused = [flag for flag, given in (("--data", args.data), ("--input-shape", args.input_shape),
                                       ("--vocab", args.vocab)) if given]
    if unused and not args.target:
        raise _CliError(f"{unused[0]} applies to a TARGET (your model factory) only; "
                        f"the built-in examples bring their own batch")
    found = examples()
    if args.list:
        for name, f in found.items():
            print(f"{name:<16}{(f.__doc__ or '').splitlines()[0]}")
        return 0
    loss_fn, loss_name = _loss(args.loss)
    if args.example is not None:
        if args.example not in found:
            raise _CliError(f"unknown example {args.example!r}; choose one of {', '.join(found)}")
        model, x, y = found[args.example](seed=seed)
        print(f"example {args.example}: {(found[args.example].__doc__ or '').splitlines()[0]}\n")
        d = _diagnose(model, x, y, loss_fn)
        _show(d)
        return 1 if args.fail_on_issue and not d.healthy else 0
    if args.target:
        factory = _load(args.target, "TARGET")
        # the factory draws from the global CPU generator: seed it, restore it after
        # (torch.manual_seed would also reseed CUDA, which fork_rng(devices=[]) keeps)
        with _seeds.torch_seeded(seed):
            model, x, y = _build(factory, args.target)
        if x is not None and unused:
            raise _CliError(f"{unused[0]} has no effect: {args.target}() returns its own "
                            f"batch (model, x, y)")
        if x is None and args.data:
            batch = _guard(f"calling {args.data}() raised", _load(args.data, "--data"))
            if not (isinstance(batch, tuple) and len(batch) == 2
                    and all(isinstance(t, Tensor) for t in batch)):
                raise _CliError(f"{args.data}() must return a tuple (x, y) of two tensors")
            x, y = batch
            how = f"the batch from {args.data}, input {tuple(x.shape)}"
        elif x is None:
            x, y, how = _random_batch(model, args, seed, loss_name)
        else:
            how = f"the factory's batch, input {tuple(x.shape)}"
        print(f"model {args.target} ({type(model).__name__}), {how}\n")
        d = _diagnose(model, x, y, loss_fn)
        _show(d)
        return 1 if args.fail_on_issue and not d.healthy else 0
    any_issue = False
    for name, f in found.items():
        model, x, y = f(seed=seed)
        d = _diagnose(model, x, y, loss_fn)
        any_issue |= not d.healthy
        where = ""
        if not d.healthy:
            where = f" in {_span(d.issues[0].layers)} -> read {d.issues[0].chapter}"
        print(f"{name:<16}{'+'.join(d.labels) or 'healthy':<30}{where}")
    print("\nRun `python -m lib.diagnose --example NAME` for the per-layer table, or "
          "`python -m lib.diagnose MODULE:FACTORY` for your own model (--help for details).")
    return 1 if args.fail_on_issue and any_issue else 0


def _random_batch(model: nn.Module, args: argparse.Namespace, seed: int,
                  loss: str) -> tuple[Tensor, Tensor, str]:
    gen = torch.Generator().manual_seed(_seeds.stream(seed, "cli_input"))
    shape, vocab, how = (args.input_shape, args.vocab, "from --input-shape") \
        if args.input_shape else _infer_shape(model, args.vocab)
    if args.batch * math.prod(shape) > MAX_BATCH_NUMEL:
        raise _CliError(f"--batch {args.batch} examples of shape {shape} hold more than "
                        f"{MAX_BATCH_NUMEL} numbers: give a smaller --batch or --input-shape")
    if vocab:
        x = torch.randint(0, vocab, (args.batch, *shape), generator=gen)
        what = f"random token ids below {vocab} {tuple(x.shape)}"
    else:
        x = torch.randn((args.batch, *shape), generator=gen)
        what = f"random N(0, 1) input {tuple(x.shape)}"
    try:
        with torch.no_grad():
            out = model(x)
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - user code, SystemExit included
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise _CliError(f"the model's forward pass failed on {what} ({how}): "
                        f"{type(exc).__name__}: {first}; give --input-shape/--vocab") from None
    y, targets = _targets(out, x, loss, gen)
    return x, y, f"{what} ({how}), {targets}"
