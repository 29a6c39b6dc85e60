"""regency agents: LLM agents through litellm, roles, budgets, and the CLI."""

__all__: list[str] = []
