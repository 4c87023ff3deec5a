"""Simulated home-monitoring devices: physiology, schedules, clinical scenarios, faults and MQTT fleets.

The pure core (vitals, physiology, devices, schedules, scenarios, faults, messages) takes a seed and an injected
clock and does no I/O; `publisher` and `fleet` are the MQTT adapters.
"""
