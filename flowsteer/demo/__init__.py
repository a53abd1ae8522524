"""The main job (``make demo`` / ``flowsteer demo``): a tour of flowsteer on the embedded model that
writes ``report.md`` and its figures into one folder. Each section is a function in its own module
that takes a `DemoContext` and appends to the report."""

from flowsteer.demo.report import DemoContext, run_demo

__all__ = ["DemoContext", "run_demo"]
