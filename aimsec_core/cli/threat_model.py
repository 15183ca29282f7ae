"""``aimsec threat-model``: the threats a deployment faces and the controls it lacks."""

from __future__ import annotations

import argparse
from typing import Any

from .arguments import output_file


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "threat-model", help="assess a guard's (or a chatbot's) controls against known threats",
        description="Print a threat model as a table and export it as JSON and Markdown. "
                    "A model endpoint's controls are read from a guard's configuration.")
    subject = parser.add_mutually_exclusive_group(required=True)
    subject.add_argument("--demo", action="store_true",
                         help="the guard `aimsec demo` puts on its scikit-learn digits model, "
                              "before its detectors are calibrated")
    subject.add_argument("--model-config", metavar="FILE",
                         help="a JSON file of guard settings (see the README)")
    subject.add_argument("--chatbot", metavar="IDS",
                         help="a chatbot's implemented control ids, comma-separated "
                              "(the original ChatbotThreatModeler's catalogue)")
    parser.add_argument("--api-key-identity", action="store_true", default=None,
                        help="an API-key middleware identifies clients in front of the guard "
                             "(not with --chatbot)")
    parser.add_argument("--declare", action="append", default=[], metavar="ID",
                        help="a control outside the guard that is in place (repeatable)")
    parser.add_argument("--json", metavar="PATH", type=output_file,
                        help="write the assessment as JSON")
    parser.add_argument("--markdown", metavar="PATH", type=output_file,
                        help="write it as Markdown (to another file than --json)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from ..errors import AimsecError
    from ..threats import export
    from .arguments import fail

    console = Console()
    try:
        assessment = _assess(args, console)
        export.write(assessment, args.json, args.markdown,
                     sources=[args.model_config] if args.model_config else [])
    except AimsecError as exc:
        return fail("threat-model", exc)
    except OSError as exc:  # --json or --markdown names a folder, or one that is missing
        return fail("threat-model", f"cannot write {exc.filename}: {exc.strerror or exc}")
    console.print(export.table(assessment))
    for number, text in enumerate(assessment.recommendations[:5], 1):
        console.print(f"{number}. {escape(text)}")
    for path in (args.json, args.markdown):
        if path:
            console.print(f"written: {escape(path)}")
    return 0


def _assess(args: argparse.Namespace, console: Any) -> Any:
    from ..threats import ThreatModeler, assess_guard

    if args.chatbot is not None:
        from ..compat.threat_modeler import ChatbotThreatModeler
        from ..errors import ConfigurationError

        if args.api_key_identity:  # a chatbot's controls are its list of ids
            raise ConfigurationError("--api-key-identity describes a guard; with --chatbot, "
                                     "list the chatbot's controls in --chatbot or --declare")

        ids = {c.strip() for c in args.chatbot.split(",") if c.strip()} | set(args.declare)
        assessment = ThreatModeler("chatbot").assess(ids, subject="chatbot")
        original = ChatbotThreatModeler().assess_implementation(ids)["risk_score"]
        console.print(f"the original ChatbotThreatModeler's score: {original:g}")
        return assessment
    if args.model_config:
        from ..threats.model_config import load_model_config

        described = load_model_config(args.model_config)
        identity = args.api_key_identity if args.api_key_identity else described.api_key_identity
        return assess_guard(described.guard, api_key_identity=identity,
                            declared=[*described.declared, *args.declare])
    return assess_guard(_demo_guard(), api_key_identity=args.api_key_identity,
                        declared=args.declare)


def _demo_guard() -> Any:
    """The guard ``aimsec demo`` builds for its scikit-learn digits model (its constraints
    and monitoring policy, lockout off), before calibration: detection reads as off."""
    from .. import digits
    from ..api import guard
    from ..demo import LIMITS, POLICY
    from ..errors import ConfigurationError

    if "sklearn" not in digits.available():
        raise ConfigurationError("--demo needs scikit-learn (pip install 'aimsec[sklearn]')")
    model = digits.sklearn_mlp(digits.load(0))
    return guard(model, name="digits-sklearn",
                 constraints=digits.constraints("sklearn", **LIMITS), policy=POLICY)
