package config

// Source is the text a File was parsed from. When baton replaces itself in
// place (baton upgrade), it passes the source of every config still in use
// to the new image, which parses it again with its own defaults: a program
// keeps the config it runs with, even when the file on disk changed since.
type Source struct {
	Path string `json:"path"` // as given, for messages
	Dir  string `json:"dir"`  // absolute: relative paths resolve against it
	Text []byte `json:"text"`
}

// Source returns the text f was parsed from (nil for a File made by hand).
func (f *File) Source() *Source { return f.source }

// Source returns the text of the file p was parsed from (nil for a
// Program made by hand). Copies made by WithBinary keep it.
func (p *Program) Source() *Source { return p.source }

// Parse parses the source again: the File it was parsed from, with the
// defaults of this build of baton.
func (s *Source) Parse() (*File, error) {
	f, diags := Parse(s.Text, s.Path, s.Dir)
	if diags.HasErrors() {
		return nil, &Error{Diags: diags}
	}
	return f, nil
}

func (f *File) setSource(s *Source) {
	f.source = s
	for _, p := range f.Programs {
		p.source = s
	}
}
