#!/usr/bin/env python3
"""A small Helm v4 command line over helm-sdkpy, for machines without a helm binary.

Run it with the Python of the venv that .ci/helm-venv.sh prints:

    PY="$(bash .ci/helm-venv.sh)"
    $PY .ci/helm.py [--kubeconfig PATH] [--namespace NS] install RELEASE CHART \
        [--values-json JSON] [--no-wait] [--timeout SECONDS] [--create-namespace]
    $PY .ci/helm.py ... upgrade RELEASE CHART [--values-json JSON] [--reset-values|--reuse-values] \
        [--install] [--no-wait] [--timeout SECONDS] [--create-namespace]
    $PY .ci/helm.py ... uninstall RELEASE [--no-wait] [--timeout SECONDS]
    $PY .ci/helm.py ... status RELEASE
    $PY .ci/helm.py ... list [--all]
    $PY .ci/helm.py lint CHART

--kubeconfig and --namespace go before or after the command; without --kubeconfig, Helm reads
$KUBECONFIG or ~/.kube/config; the namespace defaults to "default".

The result is printed as JSON on stdout and the exit status is 0. On failure the Helm error goes
to stderr and the exit status is 1 (2 for a malformed command line). `lint` exits 1 when Helm
reports an error; helm-sdkpy 0.1.32 passes lint messages on without their text (only severity
and path), and its lint takes no values (the chart's own values.yaml is used).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import helm_sdkpy

# helm.sh/helm/v4/pkg/lint/support: UnknownSev, InfoSev, WarningSev, ErrorSev.
LINT_SEVERITIES = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
LINT_ERROR = 3


def values_object(text: str) -> dict[str, Any]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from error
    if not isinstance(values, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"replicaCount\": 1}'")
    return values


def parser() -> argparse.ArgumentParser:
    # Accepted before and after the command; SUPPRESS keeps a subcommand from resetting a value
    # given before it.
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="kubeconfig file")
    connection.add_argument("--namespace", "-n", default=argparse.SUPPRESS, help="release namespace")

    root = argparse.ArgumentParser(
        prog="helm.py",
        description="Helm v4 (helm-sdkpy): install, upgrade, uninstall, status, list, lint.",
        parents=[connection],
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def release_action(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, parents=[connection])
        command.add_argument("release")
        command.add_argument("chart", help="chart directory, packaged chart or oci:// reference")
        command.add_argument(
            "--values-json", type=values_object, default=None, metavar="JSON",
            help="values as a JSON object (like helm --set-json on the whole tree)",
        )
        command.add_argument("--no-wait", action="store_true", help="do not wait for readiness")
        command.add_argument("--timeout", type=int, default=300, metavar="SECONDS")
        command.add_argument("--create-namespace", action="store_true")
        return command

    release_action("install", "install a chart")
    upgrade = release_action("upgrade", "upgrade a release")
    upgrade.add_argument("--install", action="store_true", help="install if the release is absent")
    merge = upgrade.add_mutually_exclusive_group()
    merge.add_argument("--reset-values", action="store_true",
                       help="start from the chart's defaults (helm's default without values)")
    merge.add_argument("--reuse-values", action="store_true",
                       help="merge the values over the release's current values")

    uninstall = commands.add_parser("uninstall", help="uninstall a release", parents=[connection])
    uninstall.add_argument("release")
    uninstall.add_argument("--no-wait", action="store_true", help="do not wait for deletion")
    uninstall.add_argument("--timeout", type=int, default=300, metavar="SECONDS")

    status = commands.add_parser("status", help="a release's status", parents=[connection])
    status.add_argument("release")

    listing = commands.add_parser("list", help="releases in the namespace", parents=[connection])
    listing.add_argument("--all", action="store_true", help="not only deployed releases")

    lint = commands.add_parser("lint", help="lint a chart with its default values",
                               parents=[connection])
    lint.add_argument("chart")
    return root


async def run(args: argparse.Namespace) -> Any:
    config = helm_sdkpy.Configuration(
        namespace=getattr(args, "namespace", None) or "default",
        kubeconfig=getattr(args, "kubeconfig", None),
    )
    if args.command == "install":
        return await helm_sdkpy.Install(config).run(
            args.release, args.chart, values=args.values_json, wait=not args.no_wait,
            timeout=args.timeout, create_namespace=args.create_namespace,
        )
    if args.command == "upgrade":
        return await helm_sdkpy.Upgrade(config).run(
            args.release, args.chart, values=args.values_json, wait=not args.no_wait,
            timeout=args.timeout, create_namespace=args.create_namespace, install=args.install,
            reset_values=args.reset_values, reuse_values=args.reuse_values,
        )
    if args.command == "uninstall":
        return await helm_sdkpy.Uninstall(config).run(
            args.release, wait=not args.no_wait, timeout=args.timeout
        )
    if args.command == "status":
        return await helm_sdkpy.Status(config).run(args.release)
    if args.command == "list":
        # helm-sdkpy returns null when there are no releases.
        return await helm_sdkpy.List(config).run(all=args.all) or []
    if args.command == "lint":
        return await helm_sdkpy.Lint(config).run(args.chart)
    raise AssertionError(f"unhandled command {args.command}")


def lint_errors(result: dict[str, Any]) -> list[str]:
    return [
        f"{LINT_SEVERITIES.get(message.get('Severity'), message.get('Severity'))} "
        f"{message.get('Path')}: {message.get('Err') or '(helm-sdkpy gives no message text)'}"
        for message in result.get("Messages") or []
        if message.get("Severity") == LINT_ERROR
    ]


def main() -> int:
    args = parser().parse_args()
    try:
        result = asyncio.run(run(args))
    except helm_sdkpy.HelmError as error:
        print(f"helm.py {args.command}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    if args.command == "lint":
        errors = lint_errors(result)
        if errors:
            print(f"helm.py lint {args.chart}: {len(errors)} error(s):", file=sys.stderr)
            for line in errors:
                print(f"  {line}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
