"""`ftlab generate` and `ftlab chat`: look at a run's model before trusting a number —
replies written with the model's chat template, as the evals generate them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from ftlab.cli.app import RunsDir, app, console, err

StageOpt = Annotated[str | None, typer.Option(help="Stage whose model answers (default: last).")]
SystemOpt = Annotated[
    str | None,
    typer.Option(help="System message put first (use the one the model trained with)."),
]
TokensOpt = Annotated[int, typer.Option(help="Longest reply in tokens.")]
TempOpt = Annotated[float, typer.Option(help="0 = greedy (what the evals use by default).")]


def _load(run_ref: str, runs_dir: Path, stage: str | None) -> tuple[Any, Any, str]:
    """(model, tokenizer, stage name) of a finished stage of a run."""
    from ftlab.runner import rundir
    from ftlab.runner.artifacts import load_artifact
    from ftlab.runner.export import ExportError, stage_artifact

    try:
        name, artifact = stage_artifact(rundir.find_run(run_ref, runs_dir), stage)
    except (ExportError, FileNotFoundError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    model, tokenizer = load_artifact(artifact["path"])
    return model.eval(), tokenizer, name


def _reply(model: Any, tokenizer: Any, messages: list[dict[str, str]], **gen: Any) -> str:
    from ftlab.evals.generate import GenerationParams, generate

    params = GenerationParams(batch_size=1, **gen)
    # a conversation row's last assistant turn is the reply to write: an empty one here
    row = {"messages": [*messages, {"role": "assistant", "content": ""}]}
    return generate(model, tokenizer, [row], params, desc="", progress=False)[0]


def _turns(system: str | None, history: list[dict[str, str]]) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + history


@app.command("generate")
def generate_cmd(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or directory.")],
    prompts: Annotated[list[str], typer.Argument(metavar="PROMPT...", help="User messages.")],
    stage: StageOpt = None,
    system: SystemOpt = None,
    max_new_tokens: TokensOpt = 128,
    temperature: TempOpt = 0.0,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Reply to each prompt with a run's model (one prompt, one reply)."""
    model, tokenizer, name = _load(run_ref, runs_dir, stage)
    for prompt in prompts:
        messages = _turns(system, [{"role": "user", "content": prompt}])
        reply = _reply(
            model, tokenizer, messages, max_new_tokens=max_new_tokens, temperature=temperature
        )
        console.print(Text(f"> {prompt}", style="bold"))
        console.print(reply, markup=False, highlight=False)


@app.command("chat")
def chat_cmd(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or directory.")],
    stage: StageOpt = None,
    system: SystemOpt = None,
    max_new_tokens: TokensOpt = 128,
    temperature: TempOpt = 0.0,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Talk to a run's model: each line you type is a user turn, the model answers with
    the conversation so far (its chat template). /reset starts over; /quit or Ctrl-D ends."""
    model, tokenizer, name = _load(run_ref, runs_dir, stage)
    console.print(
        f"chatting with stage {name} of {run_ref} (/reset starts over, /quit or Ctrl-D ends)",
        highlight=False,
    )
    history: list[dict[str, str]] = []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            console.print(Text("you> ", style="bold"), end="")
        line = sys.stdin.readline()
        if not interactive and line.strip():  # piped in: show what was asked
            console.print(Text.assemble(("you> ", "bold"), line.strip()))
        if not line or line.strip() in ("/quit", "/exit"):
            break
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            history = []
            console.print("(conversation reset)")
            continue
        history.append({"role": "user", "content": text})
        reply = _reply(
            model,
            tokenizer,
            _turns(system, history),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
        )
        history.append({"role": "assistant", "content": reply})
        console.print(Text.assemble(("model> ", "bold"), reply))
