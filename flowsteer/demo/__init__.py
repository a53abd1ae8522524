"""The main job (``make demo`` / ``flowsteer demo``): a tour of flowsteer on the embedded model that
writes ``report.md`` and its figures into one folder. Each section is a function in its own module
that takes a `DemoContext` and appends to the report; `SECTIONS` is the order ``make demo`` runs."""

from flowsteer.demo import feature_steering, flow, refusal_bypass, saes
from flowsteer.demo.report import DemoContext, DemoSettings, run_demo

SECTIONS = [
    ("SAE bank", saes.run),
    ("flow graph", flow.run),
    ("feature steering", feature_steering.run),
    ("refusal bypass", refusal_bypass.run_with_settings),
]

__all__ = ["SECTIONS", "DemoContext", "DemoSettings", "run_demo"]
