package testenv

import (
	"io/fs"
	"os"
	"path/filepath"
)

// Tree maps every file and directory under root, but for the top-level
// entries named in skip, to its mode and (for files) content, so that two
// snapshots compare byte for byte: "a second install changes no byte",
// "uninstall restores every file".
func Tree(root string, skip ...string) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		for _, s := range skip {
			if rel == s {
				return filepath.SkipDir
			}
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			out[rel] = "dir " + info.Mode().String()
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = info.Mode().String() + "\n" + string(data)
		return nil
	})
	return out, err
}
