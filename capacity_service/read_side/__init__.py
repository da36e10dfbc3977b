"""The read side: availability served from replicated caches of every pool's view."""
