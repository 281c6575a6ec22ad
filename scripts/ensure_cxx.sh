#!/usr/bin/env bash
# fast-downward-textworld (the `alfworld` extra: TextWorld's PDDL engine behind alfworld-gen:*) is a source
# package: pip compiles it with a C++ compiler and make (cmake comes from PyPI in its build environment).
set -u
command -v g++ >/dev/null 2>&1 && command -v make >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing g++ and make with apt-get (to build fast-downward-textworld) ..." >&2
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends g++ make) >/dev/null \
    && exit 0
fi
echo "no C++ toolchain (g++, make) and no apt-get: install one, or the alfworld extra will not build." >&2
exit 1
