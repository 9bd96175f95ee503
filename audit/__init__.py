"""The regulator's offline tools: the log exported as a bundle, replayed and checked."""
