// souq-shim (node): the shim's wall clock for the times it reports in its answers.
'use strict';

// The wall clock in Unix epoch nanoseconds, as a BigInt: a Date.now() anchor plus
// process.hrtime's progress since, re-anchored when the two part by over 2 ms (the
// wall clock was stepped). Exact integers: a double cannot hold them.
let wallAnchor = BigInt(Date.now()) * 1000000n;
let hrAnchor = process.hrtime.bigint();
function wallNs() {
  const hr = process.hrtime.bigint();
  const wall = BigInt(Date.now()) * 1000000n;
  let ns = wallAnchor + (hr - hrAnchor);
  if (ns - wall > 2000000n || wall - ns > 2000000n) {
    wallAnchor = wall;
    hrAnchor = hr;
    ns = wall;
  }
  return ns;
}

module.exports = { wallNs };
