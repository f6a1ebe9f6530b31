package api_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/kmd-project/kmd/api"
)

// A service stores a secret, reads it back with its version, and updates it
// only at the version it read, so that two writers never overwrite each
// other unknowingly.
func ExampleClient() {
	socket, stop := startKMD()
	defer stop()

	ctx := context.Background()
	c := api.NewClient(socket)

	if _, err := c.Put(ctx, "S3", "db/password", []byte("hunter2"), api.PutOptions{}); err != nil {
		log.Fatal(err)
	}

	value, version, err := c.Get(ctx, "S3", "db/password")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("version %d: %s\n", version, value)

	// Replace it only if nobody wrote it since we read it (If-Match).
	newVersion, err := c.Put(ctx, "S3", "db/password", []byte("correct horse"), api.PutOptions{IfVersion: version})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("updated to version", newVersion)

	// A writer still holding the old version is refused, not obeyed.
	_, err = c.Put(ctx, "S3", "db/password", []byte("stale"), api.PutOptions{IfVersion: version})
	if errors.Is(err, api.ErrVersion) {
		fmt.Println("stale write refused")
	}

	// Output:
	// version 1: hunter2
	// updated to version 2
	// stale write refused
}
