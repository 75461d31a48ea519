"""The AI gateway module: one UnifiedAIService in front of several LLM providers."""
