"""Serving: the step loop thread, fair admission, jobs and chunks, the runaway guard, and
streaming decode of codes to audio."""
