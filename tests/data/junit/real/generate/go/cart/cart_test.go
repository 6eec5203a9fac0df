package cart

import (
	"fmt"
	"os"
	"testing"
)

func TestAdds(t *testing.T) {
	fmt.Println("adding to the cart")
	if 1+1 != 2 {
		t.Fatal("math")
	}
}

func TestTotal(t *testing.T) {
	fmt.Fprintln(os.Stderr, "computing")
	t.Errorf("total = %v, want %v <&>", 0.1+0.2, 0.3)
}

func TestSkipped(t *testing.T) {
	t.Skip("sandbox is down")
}

func TestSizes(t *testing.T) {
	for _, size := range []string{"S", "M", "XL", "Zoë 日本"} {
		t.Run(size, func(t *testing.T) {
			t.Run("nested", func(t *testing.T) {
				if size == "XL" {
					t.Fatalf("no %s", size)
				}
			})
		})
	}
}

func TestPanics(t *testing.T) {
	var m map[string]int
	m["x"] = 1
}
