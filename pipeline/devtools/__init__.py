"""Developer tools: embedded services, simulated traffic, the producer and the demo."""
