"""The ML: CLIP encoder, heads, zero-shot, training. Knows nothing of databases or queues."""
