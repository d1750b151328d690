package jsonnet

// NewInterpretedMapper is NewMapper without the native default mapping, for this package's tests only.
var NewInterpretedMapper = newInterpretedMapper
