// Package empty has no tests: gotestsum still lists it.
package empty

// Answer is here so the package is not empty.
const Answer = 42
