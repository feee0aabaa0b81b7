"""The ML: CLIP encoder, heads, zero-shot, training. Knows nothing of databases, brokers or sockets."""
