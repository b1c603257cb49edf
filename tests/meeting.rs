// replaced by the end-to-end meeting test
