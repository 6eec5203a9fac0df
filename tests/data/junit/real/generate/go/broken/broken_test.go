package broken

import "testing"

func TestNeverBuilds(t *testing.T) {
	var unused int
	undefinedFunction()
}
