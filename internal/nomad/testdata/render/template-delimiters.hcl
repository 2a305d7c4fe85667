# Content full of template syntax, including the first-choice delimiter,
# must arrive byte for byte.
sandbox "tmpl" {
  image = "alpine:3"
  file "/workspace/tricky.txt" {
    content = "{{ env \"HOME\" }} [[ak0: not a delimiter :ak0]] $${x} {{- . -}}\n"
  }
}
