"""Partitions (DESIGN §3.3): one dynamic partition per CRM fiche, one daily partition per sales day
in the CRM's business time zone."""

from dagster import DailyPartitionsDefinition, DynamicPartitionsDefinition

FICHES_PARTITIONS_NAME = "fiches"
MAX_KEYS_PER_ADD = 10_000  # DESIGN §3.11: add keys in chunks

fiches_partitions = DynamicPartitionsDefinition(name=FICHES_PARTITIONS_NAME)
sales_days = DailyPartitionsDefinition(start_date="2025-01-01", timezone="Europe/Paris")
