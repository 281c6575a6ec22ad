"""`stratarl model ...` and `stratarl serve` (models and engines)."""

from __future__ import annotations
