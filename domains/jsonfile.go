package domains

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/kmd-project/kmd/internal/fsx"
)

// The registry keeps its own state (schedules, queued rekeys, KMIP
// servers) in small JSON files of the data dir.

// readJSON reads the JSON file path into v; a file that does not exist
// leaves v as it is. what names the file's contents in errors.
func readJSON(path, what string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	return nil
}

// writeJSON replaces path with v as JSON, atomically and durably, mode 0600.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return fsx.WriteFileAtomic(path, append(b, '\n'), 0o600)
}
