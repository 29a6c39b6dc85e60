"""regency runtime: processes, mailboxes, links, monitors, GenServer, distribution, Raft."""

__all__: list[str] = []
