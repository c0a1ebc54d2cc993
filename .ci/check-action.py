#!/usr/bin/env python3
"""Checks what GitHub's action schema cannot in the composite action .github/actions/preview:
every `inputs.X` and `steps.X` an expression names exists; each `run:` is valid bash and the
github-script valid JavaScript (node --check); and the scripts do what the inputs say, run with
a stub `appenv` that records its arguments.

Run by .ci/check-workflows.sh with the Python of its check-jsonschema venv (for ruamel.yaml):
    python .ci/check-action.py .github/actions/preview/action.yml
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ruamel.yaml import YAML

failures: list[str] = []


def check(ok: bool, what: str) -> None:
    if not ok:
        failures.append(what)


def expressions(value: object) -> list[str]:
    if isinstance(value, dict):
        return [e for v in value.values() for e in expressions(v)]
    if isinstance(value, list):
        return [e for v in value for e in expressions(v)]
    if isinstance(value, str):
        return re.findall(r"\$\{\{(.*?)\}\}", value)
    return []


def references(action: dict) -> None:
    inputs = set(action.get("inputs") or {})
    steps = action["runs"]["steps"]
    ids = {step["id"] for step in steps if "id" in step}
    texts = expressions(action)
    # `if:` conditions are expressions without ${{ }}.
    texts += [step["if"] for step in steps if "if" in step]
    for text in texts:
        for name in re.findall(r"\binputs\.([A-Za-z0-9_-]+)", text):
            check(name in inputs, f"an expression names inputs.{name}, which is not an input")
        for name in re.findall(r"\bsteps\.([A-Za-z0-9_-]+)", text):
            check(name in ids, f"an expression names steps.{name}, which is no step's id")
    for name, output in (action.get("outputs") or {}).items():
        check("value" in output, f"output {name} has no value")


def syntax(action: dict) -> None:
    for step in action["runs"]["steps"]:
        name = step.get("name", "?")
        if "run" in step:
            check(step.get("shell") == "bash", f"step {name!r}: shell is not bash")
            out = subprocess.run(["bash", "-n"], input=step["run"], text=True, capture_output=True)
            check(out.returncode == 0, f"step {name!r}: bash -n: {out.stderr.strip()}")
        script = (step.get("with") or {}).get("script")
        if script is not None and shutil.which("node"):
            # github-script runs the script as the body of an async function.
            with tempfile.NamedTemporaryFile("w", suffix=".js", delete=False) as js:
                js.write(f"(async function () {{\n{script}\n}});\n")
            out = subprocess.run(["node", "--check", js.name], text=True, capture_output=True)
            os.unlink(js.name)
            check(out.returncode == 0, f"step {name!r}: node --check: {out.stderr.strip()}")


def step(action: dict, name: str) -> dict:
    return next(s for s in action["runs"]["steps"] if s.get("name") == name)


def run(action: dict, name: str, env: dict[str, str], stub_dir: Path) -> tuple[int, str]:
    """Run one step's script with `env` as its inputs and the stub appenv first on PATH: its
    exit status and the arguments the stub got (one per line)."""
    calls = stub_dir / "calls"
    calls.write_text("")
    full = {
        "PATH": f"{stub_dir}:{os.environ['PATH']}",
        "RUNNER_TEMP": str(stub_dir),
        "APPENV_STUB_CALLS": str(calls),
        **env,
    }
    out = subprocess.run(
        ["bash", "-e", "-c", step(action, name)["run"]], env=full, text=True, capture_output=True
    )
    return out.returncode, calls.read_text()


def behaviour(action: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stub_dir = Path(tmp)
        stub = stub_dir / "appenv"
        stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" >> "$APPENV_STUB_CALLS"\n')
        stub.chmod(0o755)
        good = {"COMMAND": "up", "PR": "12", "IMAGE": "ghcr.io/a/b:1", "WAIT": "true",
                "COMMENT": "true"}
        status, _ = run(action, "Check the inputs", good, stub_dir)
        check(status == 0, "Check the inputs refuses valid inputs")
        for bad in ({"COMMAND": "deploy"}, {"PR": ""}, {"PR": "12; rm"}, {"IMAGE": ""},
                    {"WAIT": "yes"}, {"COMMENT": "1"}):
            status, _ = run(action, "Check the inputs", {**good, **bad}, stub_dir)
            check(status != 0, f"Check the inputs accepts {bad}")
        status, _ = run(action, "Check the inputs", {**good, "COMMAND": "down", "IMAGE": ""},
                        stub_dir)
        check(status == 0, "Check the inputs wants an image for down")

        up = {"APP": "shop", "PR": "12", "IMAGE": "ghcr.io/a/b:1", "FILE": "deploy/app.yaml",
              "SET": "web.replicas=1\n\n  \nworkers.0.replicas=2 \n", "TTL": "48h",
              "WAIT": "true", "TIMEOUT": "10m"}
        status, calls = run(action, "Preview up", up, stub_dir)
        expected = ["preview", "up", "--app", "shop", "--pr", "12", "--image", "ghcr.io/a/b:1",
                    "--timeout", "10m", "--file", "deploy/app.yaml", "--ttl", "48h", "--wait",
                    "--set", "web.replicas=1", "--set", "workers.0.replicas=2"]
        check(status == 0 and calls.splitlines() == expected,
              f"Preview up ran appenv with {calls.splitlines()}, not {expected}")
        status, calls = run(action, "Preview up",
                            {**up, "FILE": "", "SET": "", "TTL": "", "WAIT": "false"}, stub_dir)
        expected = ["preview", "up", "--app", "shop", "--pr", "12", "--image", "ghcr.io/a/b:1",
                    "--timeout", "10m"]
        check(status == 0 and calls.splitlines() == expected,
              f"Preview up without options ran appenv with {calls.splitlines()}")
        down = {"APP": "shop", "PR": "12", "WAIT": "true", "TIMEOUT": "5m"}
        status, calls = run(action, "Preview down", down, stub_dir)
        expected = ["preview", "down", "--app", "shop", "--pr", "12", "--timeout", "5m", "--wait"]
        check(status == 0 and calls.splitlines() == expected,
              f"Preview down ran appenv with {calls.splitlines()}")

        kubeconfig = "apiVersion: v1\nkind: Config\n"
        status, _ = run(action, "Kubeconfig", {"KUBECONFIG_CONTENTS": kubeconfig}, stub_dir)
        written = stub_dir / "appenv-kubeconfig"
        check(status == 0 and written.read_text() == kubeconfig + "\n",
              "Kubeconfig does not write the kubeconfig to $RUNNER_TEMP/appenv-kubeconfig")
        check(written.stat().st_mode & 0o077 == 0, "the kubeconfig is readable by others")
        status, _ = run(action, "Kubeconfig", {"KUBECONFIG_CONTENTS": ""}, stub_dir)
        check(status != 0, "Kubeconfig accepts an empty kubeconfig")
        run(action, "Remove the kubeconfig", {}, stub_dir)
        check(not written.exists(), "Remove the kubeconfig leaves it")


def main() -> int:
    for path in sys.argv[1:]:
        action = YAML(typ="safe").load(Path(path))
        references(action)
        syntax(action)
        if Path(path).parent.name == "preview":
            behaviour(action)
        for failure in failures:
            print(f"[check-action] {path}: {failure}", file=sys.stderr)
        if not failures:
            print(f"[check-action] {path}: references, syntax and behaviour ok", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
