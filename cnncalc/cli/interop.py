"""`cnncalc import` (ONNX file or PyTorch module → spec) and `cnncalc export` (spec or
checkpoint → ONNX)."""
from __future__ import annotations

from pathlib import Path

import typer

from cnncalc.cli.common import handle_errors, warn
from cnncalc.onnx import DEFAULT_OPSET, InteropError

#: this module's commands; cnncalc.cli.app adds them to the root application
commands = typer.Typer()


@commands.command("import")
@handle_errors
def import_(
    model: Path = typer.Argument(None, help="An .onnx file.", show_default=False),
    out: Path = typer.Option(None, "--out", "-o", help="Write the spec here (default: stdout)."),
    checkpoint: Path = typer.Option(None, "--checkpoint",
                                    help="Also write the model's weights and BN statistics as "
                                         "a checkpoint (.npz) for evaluate, predict, export."),
    torch_factory: str = typer.Option(None, "--torch", metavar="MODULE:FACTORY",
                                      help="Read a torch.nn.Module instead: "
                                           "package.module:factory (a class or function)."),
    input_size: str = typer.Option("224x224x3", "--input",
                                   help="Input WxHxD for --torch."),
):
    """Write the cnncalc spec of an ONNX model or a PyTorch module."""
    if (model is None) == (torch_factory is None):
        raise InteropError("give an .onnx file or --torch package.module:factory (one of them)",
                           hint="e.g.  cnncalc import model.onnx -o model.yaml")
    if torch_factory is not None:
        from cnncalc.onnx.torch_import import import_torch

        if checkpoint is not None:
            raise InteropError("--checkpoint needs an ONNX file; --torch reads the structure only",
                               hint="export the module with torch.onnx.export and import that")
        result = import_torch(torch_factory, input_size)
    else:
        from cnncalc.onnx.importer import import_model

        result = import_model(model)
    if out is None:
        typer.echo(result.spec_text, nl=False)
    else:
        out.write_text(result.spec_text, encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)
    if checkpoint is not None:
        from cnncalc.train.checkpoint import save_checkpoint

        save_checkpoint(checkpoint, params=result.params, buffers=result.buffers,
                        optimizer_state=None, schedule_state=None, preprocess_state=None,
                        spec_text=result.spec_text, seed=None, epoch=0, step=0,
                        extra={"source": str(model)})
        typer.echo(f"wrote {checkpoint}", err=True)
    warn(*result.notes)


@commands.command("export")
@handle_errors
def export(
    source: Path = typer.Argument(..., help="A YAML spec or a checkpoint (.npz).",
                                  show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="The .onnx file to write."),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", min=13, help="ONNX opset."),
    init: str = typer.Option("he", "--init", help="Weight init for a spec (he, xavier, "
                                                  "normal:0.01, ...)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the init for a spec."),
):
    """Write a spec (random init) or a trained checkpoint (its weights and preprocessing) as
    an ONNX model that onnxruntime runs."""
    from cnncalc.onnx import export as onnx_export

    if source.suffix.lower() == ".npz":
        model = onnx_export.export_checkpoint(source, opset=opset)
    else:
        model = onnx_export.export_spec(source, init=init, seed=seed, opset=opset)
    onnx_export.save(model, out)
    typer.echo(f"wrote {out} (opset {opset}, IR version {model.ir_version})", err=True)
