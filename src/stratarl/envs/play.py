"""`stratarl play`: a person plays an environment in the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel

from .registry import make_env, task_at

HELP = "Commands: [bold]help[/] (admissible actions), [bold]task[/] (the goal), [bold]quit[/] (end)."


def play_loop(env_id: str, split: str, index: int, console: Console, max_moves: int = 1000) -> None:
    task = task_at(env_id, split, index)
    env = make_env(task)
    obs, info = env.reset(task)
    console.print(Panel(info["task_description"], title=f"{task.env} · {split} #{index}", border_style="cyan"))
    console.print(HELP)
    steps, done = 0, False
    while not done and steps < max_moves:
        console.print(Panel(obs.strip(), title=f"step {steps} · score {info['score']:.2f}", border_style="green"))
        try:
            action = console.input("[bold]> [/]").strip()
        except EOFError:
            break
        if action == "quit":
            break
        if action in ("help", "?"):
            acts = info.get("admissible_actions")
            console.print(", ".join(acts) if acts else "This environment gives no list of admissible actions.")
            continue
        if action == "task":
            console.print(info["task_description"])
            continue
        obs, reward, done, info = env.step(action)
        steps += 1
        if reward:
            console.print(f"[yellow]reward {reward:+.2f}[/]")
    if done:
        console.print(Panel(obs.strip(), title="final", border_style="green"))
    verdict = "[bold green]won[/]" if info.get("won") else "[bold red]not won[/]"
    console.print(f"{verdict} after {steps} steps, score {info['score']:.2f}")
    env.close()
