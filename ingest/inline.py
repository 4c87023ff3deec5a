"""Inline mode: the processors' inline runner in this process, fed by the relay (imports only their public API)."""

from __future__ import annotations

import importlib

from ingest.event import ReadingEvent
from ingest.settings import IngestSettings
from ingest.sinks import InlineSink


async def transport(settings: IngestSettings) -> object:
    """Builds the inline transport; raises ImportError while `processors.inline` does not exist."""
    inline = importlib.import_module("processors.inline")
    events = importlib.import_module("processors.events")
    runner = inline.InlineRunner.from_dsn(settings.processor_dsn())

    def convert(event: ReadingEvent) -> object:
        return events.CommittedReading(
            reading_id=event.reading_id,
            organization_id=event.organization_id,
            patient_id=event.patient_id,
            device_id=event.device_id,
            vital_type=event.vital_type,
            vital_type_id=event.vital_type_id,
            value=event.value,
            unit=event.unit,
            measured_at=event.measured_at,
            received_at=event.received_at,
        )

    from ingest.service import Transport

    return Transport(InlineSink(runner.deliver, convert), tasks=[("processors", runner.run)], cleanups=[runner.close])
