"""Delivery of `notifications` to care teams: channels, retries, rate limits, quiet hours and escalation.

The pure core (`retry`, `rate_limit`, `quiet_hours`, `escalation`, `signing`, `content`, `plan`) takes an injected
clock and imports no I/O library; the adapters (`channels`, `store`, `dispatcher`, `escalator`) only translate.
"""
