"""Data providers: they plan chunks and fetch DBN; they never write to the database."""
