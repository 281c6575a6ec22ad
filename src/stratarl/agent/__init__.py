"""The agent side: prompt templates per env family, output parsing, and per-episode memory."""
