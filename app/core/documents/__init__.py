"""Chat with your documents: extraction, chunking, the SQLite index (BM25 + vectors), indexing, retrieval."""
