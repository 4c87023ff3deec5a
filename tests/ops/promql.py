"""Metric names in PromQL expressions, and the metric names our services export."""

from __future__ import annotations

import importlib
import inspect
import re

from prometheus_client import CollectorRegistry

# Modules that define a service's metrics class (one registry per instance). A module that does not exist yet
# (a service without metrics) is skipped; every class in them with a `registry` is instantiated.
METRICS_MODULES = ("ingest.metrics", "processors.metrics", "processors.delivery.metrics")
# Series Prometheus itself adds to every scrape.
PROMETHEUS_SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
        "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
        "group", "inf", "nan",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords, labels, durations and numbers removed)."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENT.findall(text) if name.lower() not in _KEYWORDS}


def _sample_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        base = family.name
        if family.type == "counter":
            names |= {base + "_total", base + "_created"}
        elif family.type == "histogram":
            names |= {base + "_bucket", base + "_sum", base + "_count", base + "_created"}
        elif family.type == "summary":
            names |= {base, base + "_sum", base + "_count", base + "_created"}
        else:
            names.add(base)
    return names


def _registries() -> dict[str, list[CollectorRegistry]]:
    found: dict[str, list[CollectorRegistry]] = {}
    for module_name in METRICS_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        registries = []
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module_name:
                continue
            try:
                instance = cls()
            except TypeError:
                continue
            registry = getattr(instance, "registry", None)
            if isinstance(registry, CollectorRegistry):
                registries.append(registry)
        found[module_name] = registries
    return found


def exported_samples() -> set[str]:
    """Every sample name the services' metrics classes can expose (what PromQL selects)."""
    return {name for registries in _registries().values() for r in registries for name in _sample_names(r)}


def exported_families() -> dict[str, set[str]]:
    """Metric names as documented (counters with `_total`, histograms by base name), by module."""
    found: dict[str, set[str]] = {}
    for module_name, registries in _registries().items():
        names = set()
        for registry in registries:
            for family in registry.collect():
                names.add(family.name + "_total" if family.type == "counter" else family.name)
        found[module_name] = names
    return found
