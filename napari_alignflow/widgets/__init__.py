"""The AlignFlow dock widgets: thin Qt clients of the engine API (no model or training logic lives here)."""
