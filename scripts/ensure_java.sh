#!/usr/bin/env bash
# TextWorldExpress and ScienceWorld run on the JVM and need Java 17 or newer.
set -u
java_major() {
  java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}
if command -v java >/dev/null 2>&1 && [ "$(java_major)" -ge 17 ] 2>/dev/null; then
  exit 0
fi
echo "Java 17+ not found; TextWorldExpress and ScienceWorld need it." >&2
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing default-jre-headless with apt-get ..." >&2
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q default-jre-headless && exit 0
fi
cat >&2 <<MSG
Cannot install Java automatically here. Install a Java 17+ runtime, for example:
  sudo apt-get install default-jre-headless      (Debian/Ubuntu)
  brew install openjdk@17                         (macOS)
then run make again.
MSG
exit 1
