"""Partitions (DESIGN §3.3): one dynamic partition per CRM fiche, one daily partition per sales day
in the CRM's business time zone."""

from dagster import DailyPartitionsDefinition, DynamicPartitionsDefinition

FICHES_PARTITIONS_NAME = "fiches"
MAX_KEYS_PER_ADD = 10_000  # DESIGN §3.11: add keys in chunks

fiches_partitions = DynamicPartitionsDefinition(name=FICHES_PARTITIONS_NAME)
#: ``end_offset=1``: today's (still open) day is a partition too, so a date range up to today can be
#: fetched; the daily schedule targets yesterday explicitly.
sales_days = DailyPartitionsDefinition(start_date="2020-01-01", timezone="Europe/Paris", end_offset=1)
