"""The scheduler and what it grants tasks before they run."""
