package requestid

// An Option configures the requestid interceptors.
type Option interface {
	apply(*options)
}

type options struct {
	generate func() string
}

func evaluate(opts []Option) *options {
	o := &options{
		generate: newID,
	}
	for _, opt := range opts {
		opt.apply(o)
	}
	return o
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithGenerator mints ids with gen instead of 128 random bits. gen must be
// safe for concurrent use, and what it returns is used as is, without the
// sanity check applied to inbound ids. A nil gen keeps the default.
func WithGenerator(gen func() string) Option {
	return optionFunc(func(o *options) {
		if gen != nil {
			o.generate = gen
		}
	})
}
