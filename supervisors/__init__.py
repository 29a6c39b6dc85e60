"""regency supervisors: OTP supervision trees and orchestrator failover."""

__all__: list[str] = []
