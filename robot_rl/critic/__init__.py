"""Reserved for a later issue (see ../shared/ARCHITECTURE.md)."""
