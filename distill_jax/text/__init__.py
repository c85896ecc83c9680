"""Text: HF BERT weights, tokenisation, the packaged all-MiniLM-L6-v2 teacher, STS-B."""
